"""Build the student policy and its tokenizer."""

from purld.students.base import Student
from purld.students.hf import HFStudent, LoRAStudent, QLoRAStudent, save_student
from purld.students.tiny import TinyLlamaStudent, build_char_tokenizer
from purld.students.tiny_qwen_vl import TinyQwenVLStudent
from purld.students.tiny_vlm import TinyVLMStudent

__all__ = ["HFStudent", "LoRAStudent", "QLoRAStudent", "Student", "TinyLlamaStudent", "TinyQwenVLStudent", "TinyVLMStudent", "build_char_tokenizer",
           "save_student"]
