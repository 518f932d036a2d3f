"""Sequence layout: the LLM's own chat template with `<Img>` / `</Img>` as ordinary text and slots for embeddings.

    user: <Img>[LQ visual tokens]</Img>[task tokens]   assistant: <Img>[HQ visual tokens]</Img><end of turn>

(the paper's layout).

A layout is a pair of 1-D tensors of equal length T: `ids` (token ids; 0 in slots) and `kinds` (TEXT, LQ, TASK, HQ).
Every image of a batch shares one layout, since the slot counts do not depend on the image or the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMG_BEGIN, IMG_END = "<Img>", "</Img>"
TEXT, LQ, TASK, HQ = 0, 1, 2, 3
# private-use characters stand for the slots while the chat template is rendered
_SLOT_MARKS = {"\ue000": LQ, "\ue001": TASK, "\ue002": HQ}
_MARK_OF = {kind: mark for mark, kind in _SLOT_MARKS.items()}


@dataclass
class Layout:
    ids: torch.Tensor  # (T,) token ids, 0 in slots
    kinds: torch.Tensor  # (T,) TEXT / LQ / TASK / HQ
    answer_start: int  # first position of the assistant's answer (after the generation prompt)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def positions(self, kind: int) -> torch.Tensor:
        return (self.kinds == kind).nonzero().squeeze(-1)

    def ce_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions p, token ids at p+1) for next-token CE: every text token of the answer is a target."""
        nxt = torch.arange(1, len(self))
        keep = (nxt >= self.answer_start) & (self.kinds[nxt] == TEXT)
        return nxt[keep] - 1, self.ids[nxt[keep]]

    def regression_sources(self) -> torch.Tensor:
        """Positions whose hidden state predicts each HQ token: the position just before it."""
        return self.positions(HQ) - 1


class SequenceBuilder:
    """Builds prompt and training layouts with a tokenizer's chat template."""

    def __init__(self, tokenizer, num_visual_tokens: int, num_task_tokens: int):
        self.tokenizer = tokenizer
        self.num_visual_tokens = num_visual_tokens
        self.num_task_tokens = num_task_tokens
        self.eos_token_id = tokenizer.eos_token_id
        self.begin_ids = tokenizer.encode(IMG_BEGIN, add_special_tokens=False)
        self.end_ids = tokenizer.encode(IMG_END, add_special_tokens=False)

    def _user_message(self) -> dict:
        image = f"{IMG_BEGIN}{_MARK_OF[LQ]}{IMG_END}"
        content = image + _MARK_OF[TASK]
        return {"role": "user", "content": content}

    def _render(self, text: str, answer_start_char: int) -> Layout:
        counts = {LQ: self.num_visual_tokens, TASK: self.num_task_tokens, HQ: self.num_visual_tokens}
        ids: list[int] = []
        kinds: list[int] = []
        answer_start = None
        piece, pos = [], 0
        for pos, char in enumerate(text + "\0"):
            if pos == answer_start_char and answer_start is None:
                ids_piece = self.tokenizer.encode("".join(piece), add_special_tokens=False) if piece else []
                ids += ids_piece
                kinds += [TEXT] * len(ids_piece)
                piece = []
                answer_start = len(ids)
            if char in _SLOT_MARKS or char == "\0":
                ids_piece = self.tokenizer.encode("".join(piece), add_special_tokens=False) if piece else []
                ids += ids_piece
                kinds += [TEXT] * len(ids_piece)
                piece = []
                if char != "\0":
                    kind = _SLOT_MARKS[char]
                    ids += [0] * counts[kind]
                    kinds += [kind] * counts[kind]
            else:
                piece.append(char)
        return Layout(torch.tensor(ids), torch.tensor(kinds), len(ids) if answer_start is None else answer_start)

    def prompt(self) -> Layout:
        """The user turn and the generation prompt: what the generator starts from."""
        text = self.tokenizer.apply_chat_template([self._user_message()], tokenize=False, add_generation_prompt=True)
        return self._render(text, len(text))

    def training(self) -> Layout:
        """Prompt + answer `<Img>[HQ]</Img>` + end of turn (nothing after the end-of-turn token)."""
        prompt = self.tokenizer.apply_chat_template([self._user_message()], tokenize=False, add_generation_prompt=True)
        answer = {"role": "assistant", "content": f"{IMG_BEGIN}{_MARK_OF[HQ]}{IMG_END}"}
        text = self.tokenizer.apply_chat_template([self._user_message(), answer], tokenize=False)
        if not text.startswith(prompt):
            raise ValueError("The chat template renders the answer in a way that does not extend the prompt.")
        eos = self.tokenizer.eos_token
        cut = text.find(eos, len(prompt)) if eos else -1
        if cut >= 0:
            text = text[: cut + len(eos)]
        return self._render(text, len(prompt))
