"""The report: one figure function per figure of the study, and the HTML page that shows them."""
