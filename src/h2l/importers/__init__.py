"""Readers that turn other projects' files into a :class:`h2l.model.teacher.Teacher`."""
