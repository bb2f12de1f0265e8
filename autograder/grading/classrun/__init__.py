"""The class run: the instructor's `grade` process, which stages, schedules, records and reports submissions."""
