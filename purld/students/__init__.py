"""Build the student policy and its tokenizer."""

from purld.students.base import Student
from purld.students.tiny import TinyLlamaStudent, build_char_tokenizer

__all__ = ["Student", "TinyLlamaStudent", "build_char_tokenizer"]
