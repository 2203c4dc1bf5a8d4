"""Build the student policy and its tokenizer."""

from purld.students.base import Student
from purld.students.hf import HFStudent, LoRAStudent, QLoRAStudent, save_student
from purld.students.tiny import TinyLlamaStudent, build_char_tokenizer

__all__ = ["HFStudent", "LoRAStudent", "QLoRAStudent", "Student", "TinyLlamaStudent", "build_char_tokenizer", "save_student"]
