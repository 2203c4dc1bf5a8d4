"""Anchor sources: each teacher answers a prompt once; the anchor cache keeps the answer."""

from purld.teachers.base import AnchorAnswer, Teacher
from purld.teachers.reference import ReferenceTeacher

__all__ = ["AnchorAnswer", "ReferenceTeacher", "Teacher"]
