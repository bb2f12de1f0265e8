"""The student's kernel and its jail: what runs the student's code, and the only ways out of it."""
