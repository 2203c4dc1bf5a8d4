"""`student=tiny`: a random-init small Llama with a character tokenizer, fully offline.

The tokenizer is built in code from a fixed alphabet (printable ASCII), so no
file or hub download is ever needed; every character is one token.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from purld.students.base import Student, checked_gradient_checkpointing, checked_lean_activations

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
ALPHABET = sorted(set(string.printable) - set("\x0b\x0c\r"))


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character, plus pad / bos / eos / unk."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + ALPHABET)}
    # BPE without merges splits a string into its characters.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
    return tokenizer


class TinyLlamaStudent(Student):
    name = "tiny"

    def __init__(
        self,
        hidden_size: int = 128,
        num_hidden_layers: int = 3,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        max_position_embeddings: int = 256,
        seed: int = 0,
        gradient_checkpointing: bool | str = False,
        lean_activations: bool = True,
        attn_implementation: str | None = None,
    ) -> None:
        self.config_kwargs = dict(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_position_embeddings,
        )
        self.seed, self.gradient_checkpointing = seed, checked_gradient_checkpointing(gradient_checkpointing)
        self.lean_activations = checked_lean_activations(lean_activations)
        self.attn_implementation = attn_implementation  # None: transformers' default (sdpa)

    def llama_config(self, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
        """The Llama of these sizes over `tokenizer`'s vocabulary, its embeddings tied to the output head."""
        return LlamaConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
            **({"attn_implementation": self.attn_implementation} if self.attn_implementation else {}),
            **self.config_kwargs,
        )

    def load(self) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
        tokenizer = build_char_tokenizer()
        config = self.llama_config(tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return self.apply_memory_options(model), tokenizer
