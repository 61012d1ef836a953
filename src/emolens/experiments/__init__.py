"""The study's experiments: validation, geometry, speakers and the statistics they share."""
