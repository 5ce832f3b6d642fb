"""Readers that turn other projects' files into a :class:`h2l.teacher.MultiHeadLDA`."""
