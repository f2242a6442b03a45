"""TeacherGate: a teacher that is not good enough stops the run.

See docs/architecture.md §7.
"""
