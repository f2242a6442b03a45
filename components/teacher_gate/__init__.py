"""TeacherGate: a teacher that is not good enough stops the run (DESIGN §7)."""
