"""One hundred everyday situations of ambiguous valence, in this project's own words.

Each topic can carry any emotion: the same event can be met with joy, dread,
boredom or spite depending on the person.  Stories are assigned to topics, and
held-out evaluation splits by topic (see :func:`is_held_out_topic`), so a vector
that merely memorised a situation cannot score well on unseen ones.
"""

from __future__ import annotations

TOPICS: tuple[str, ...] = (
    "A letter arrives that was posted twenty years ago",
    "A neighbour begins building an extension next door",
    "Someone is asked to house-sit for a relative they barely know",
    "A person learns their old school is being turned into flats",
    "A baker's signature cake is copied by the shop across the road",
    "A family gathers to sort through a late uncle's garage",
    "An employee is moved to the night shift",
    "A runner is told to sit out the final race of the season",
    "A traveller's luggage arrives at the wrong airport",
    "A student is called to the head teacher's office without explanation",
    "A person finds a stranger's photo album on a park bench",
    "Two cousins are both named in a will for the same piano",
    "A tenant's landlord announces a surprise inspection",
    "A gardener's prize marrow is entered in the show under someone else's name",
    "A nurse is asked to cover a colleague's ward for a week",
    "A person meets their former teacher at the supermarket checkout",
    "A couple's wedding venue double-books their date",
    "A musician's old band announces a reunion tour without them",
    "A parent reads their child's school report",
    "A driver is stopped at a roadside check late at night",
    "Someone's phone screen cracks on the morning of a big day",
    "A person is offered a job in a country they have never visited",
    "A retired sailor is invited to launch a new ship",
    "A shop owner finds the front window smashed at dawn",
    "A woman hears her late father's voice on an old cassette",
    "A man is asked to be godfather to a friend's baby",
    "A painter's mural is scheduled to be painted over",
    "A pupil is chosen to read aloud at assembly",
    "A family's holiday cottage is flooded before they arrive",
    "A lodger discovers the house rules have changed overnight",
    "A cyclist's bike is stolen from outside the library",
    "An old friend calls after ten years of silence",
    "A person learns the results of a long-awaited medical test",
    "Someone inherits a cat from a neighbour who moved away",
    "A chess player is paired against their former coach",
    "A volunteer is thanked publicly at a town meeting",
    "A teenager is handed the car keys for the first time",
    "A farmer watches a storm gather over a ripe field",
    "A translator finds an error in a published book they worked on",
    "A widower is invited to a dance at the community hall",
    "Two flatmates discover they have both been paying the same bill",
    "A choir singer is moved from the back row to a solo",
    "A clerk finds a large accounting error on the last day of the year",
    "An author sees their novel in a charity shop",
    "A grandmother is taught to use a video call",
    "A boy's model rocket lands on the neighbour's roof",
    "A scientist's experiment gives a result nobody expected",
    "A commuter's train stops in a tunnel for an hour",
    "A bride receives a wedding gift from an unknown sender",
    "A carpenter is asked to repair a table he built decades ago",
    "A woman returns to her hometown for a funeral",
    "A comedian performs to a nearly empty room",
    "A young doctor works their first night alone on call",
    "A child's pet goldfish is found floating one morning",
    "A pensioner wins a small prize in a raffle",
    "A job candidate waits in the lobby before an interview",
    "An architect sees their building being demolished",
    "A person receives a call from an unknown number at midnight",
    "A girl finds her mother's old diary in a drawer",
    "A team loses the final in the last minute",
    "A soldier comes home after a long deployment",
    "A café owner's regular customer stops coming in",
    "A lecturer's slides fail to load in front of a full hall",
    "Someone is asked to keep a secret about a friend's engagement",
    "A family's dog goes missing during a thunderstorm",
    "A woman is promoted over her closest colleague",
    "A man finds his name misspelled on a memorial plaque",
    "A student receives an envelope from the university",
    "Neighbours hold a meeting about a planned phone mast",
    "A photographer's best picture is used without credit",
    "A person hears their childhood song on the radio",
    "A shy employee is asked to lead the team meeting",
    "A beekeeper opens the hive after a hard winter",
    "A mother watches her son leave for university",
    "A market trader's stall is moved to the far end of the square",
    "An elderly man is told he can no longer drive",
    "A swimmer attempts to cross the lake alone",
    "A programmer's code is deleted by a careless merge",
    "A family receives a knock at the door late on Christmas Eve",
    "A patient wakes up after surgery",
    "Two old rivals are seated together at a dinner",
    "A girl is left waiting at the school gate",
    "A homeowner hears footsteps in the attic",
    "A village fete is cancelled because of the weather",
    "A man finds out his brother has been borrowing his identity",
    "A student is handed back an exam paper",
    "A waiter is blamed for a customer's lost coat",
    "A climber reaches a summit just as clouds roll in",
    "A writer receives the first copy of their printed book",
    "A person's cat brings home a strange collar",
    "A mechanic is asked to fix a car with no money to pay",
    "A gardener finds an old coin while digging",
    "A teenager overhears their parents arguing about money",
    "An old woman's house is full of visitors for her birthday",
    "A fisherman's boat will not start far from shore",
    "A new mother brings her baby home for the first time",
    "A hiker loses the path as the light fades",
    "A shopkeeper decides whether to close the family business",
    "A colleague leaves a handwritten note on someone's desk",
    "A person sits alone in a waiting room, watching the clock",
)

assert len(TOPICS) == 100 and len(set(TOPICS)) == 100

#: Every fourth topic (ids 3, 7, 11, ...) is held out from training vectors.
HELD_OUT_EVERY = 4


def is_held_out_topic(topic_id: int) -> bool:
    """True for the quarter of topics reserved for held-out evaluation.

    >>> is_held_out_topic(3), is_held_out_topic(4)
    (True, False)
    """
    return topic_id % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


def story_topic(emotion_index: int, story_index: int) -> int:
    """Topic id for the ``story_index``-th curated story of the emotion at ``emotion_index``.

    Twelve consecutive topics per emotion, so every emotion has exactly three
    held-out topics among its first twelve stories.

    >>> [story_topic(0, k) for k in range(3)], story_topic(8, 11)
    ([0, 1, 2], 7)
    """
    return (emotion_index * 12 + story_index) % len(TOPICS)
