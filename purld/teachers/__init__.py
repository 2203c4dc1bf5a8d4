"""Anchor sources: each teacher answers a prompt once; the anchor cache keeps the answer."""

from purld.teachers.base import AnchorAnswer, Teacher, TeacherError, TeacherFailure
from purld.teachers.hf import HFTeacher
from purld.teachers.litellm import LiteLLMTeacher
from purld.teachers.reference import ReferenceTeacher

__all__ = ["AnchorAnswer", "HFTeacher", "LiteLLMTeacher", "ReferenceTeacher", "Teacher", "TeacherError", "TeacherFailure"]
