"""The class run: the instructor's `grade` process; it stages, schedules, records, reports."""
