"""Mixed-modality generation with the KV cache: text by default, visual tokens after the image-begin marker.

Every row of a batch advances one position per step (one forward of one position with the KV cache), so rows can
switch modes at different steps without padding. Per row:
- text mode: greedy next token (or a queued forced token); after the text ends with `<Img>` the row switches to
  visual mode; the end-of-turn token finishes it;
- visual mode: v = adapter_out(h) is the next visual token and adapter_in(v) the next input embedding; after N
  visual tokens `</Img>` is queued and the row returns to text mode.
`use_cache=False` re-runs the whole sequence for each new position (the reference the tests compare against).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .sequence import IMG_BEGIN

GENERATION_SLACK = 48  # positions generated beyond the visual tokens by default (text, markers, end of turn)


@dataclass
class TextPiece:
    row: int
    text: str


@dataclass
class VisualToken:
    row: int
    index: int  # 0-based
    total: int
    token: torch.Tensor  # (vision_dim,)


@dataclass
class ImageDone:
    row: int
    tokens: torch.Tensor  # (N, vision_dim)


@dataclass
class Finished:
    row: int
    text: str
    tokens: torch.Tensor | None  # (N, vision_dim), or None if the row produced no image

    def image_or(self, fallback: torch.Tensor) -> torch.Tensor:
        """The generated visual tokens if the image is complete, else `fallback` (N, vision_dim), e.g. the input's."""
        return self.tokens if self.has_image(fallback.shape[0]) else fallback

    def has_image(self, count: int) -> bool:
        return self.tokens is not None and self.tokens.shape[0] == count


@dataclass
class _Row:
    mode: str = "text"  # text | visual | done
    text_ids: list[int] = field(default_factory=list)
    text: str = ""
    queue: list[int] = field(default_factory=list)
    visual: list[torch.Tensor] = field(default_factory=list)
    image_done: bool = False
    text_since_image: int = 0


@torch.inference_mode()
def generate(
    model,
    lq: torch.Tensor,
    tasks: list[str],
    *,
    max_new_tokens: int | None = None,
    force_image_after: int | None = 8,
    use_cache: bool = True,
):
    """Yield events for a batch. lq: (B, N, vision_dim) visual tokens of the inputs; tasks: B task names.

    force_image_after: if a row has written this many text tokens without opening an image, `<Img>` is queued
    (None: never force). max_new_tokens: total positions generated (default: N + GENERATION_SLACK).
    """
    batch, count = lq.shape[0], model.num_visual_tokens
    max_new_tokens = max_new_tokens or count + GENERATION_SLACK
    tokenizer = model.tokenizer
    rows = [_Row() for _ in range(batch)]
    eos_embed = model.embed_tokens(torch.tensor([model.sequences.eos_token_id]))[0]  # fed to finished rows

    embeds = model.embed_layout(model.prompt_layout, lq.to(model.device), tasks)  # (B, T, llm_dim)
    cache, start = None, 0
    if use_cache:
        cache = _new_cache(model, embeds.shape[1] + max_new_tokens)
        start = _fill_constant_prefix(model, cache, batch)
    hidden, cache = model.hidden_states(embeds[:, start:], cache)
    h = hidden[:, -1]  # (B, llm_dim)

    for _ in range(max_new_tokens):
        if all(r.mode == "done" for r in rows):
            break
        next_embeds = torch.zeros(batch, embeds.shape[-1], device=model.device)  # (B, llm_dim)
        yield from _step(model, rows, tasks, h, next_embeds, eos_embed, force_image_after)
        if use_cache:
            hidden, cache = model.hidden_states(next_embeds[:, None], cache)
        else:
            embeds = torch.cat([embeds, next_embeds[:, None]], dim=1)
            hidden, _ = model.hidden_states(embeds)
        h = hidden[:, -1]
    for i, r in enumerate(rows):
        if r.mode != "done":
            yield Finished(i, _clean(r.text, tokenizer), _tokens(r))


def _step(
    model,
    rows: list[_Row],
    tasks: list[str],
    h: torch.Tensor,
    next_embeds: torch.Tensor,
    eos_embed: torch.Tensor,
    force_image_after: int | None,
):
    """Advance every row (of task `tasks[i]`) by one position: yield its events and write its next input embedding
    into `next_embeds`.

    h: (B, llm_dim) final hidden states of the last position; next_embeds: (B, llm_dim), filled in place."""
    seq, count = model.sequences, model.num_visual_tokens
    for r in rows:
        if (
            r.mode == "text"
            and not r.image_done
            and not r.queue
            and force_image_after is not None
            and r.text_since_image >= force_image_after
        ):
            r.queue = list(seq.begin_ids)
    text_rows = [i for i, r in enumerate(rows) if r.mode == "text" and not r.queue]  # rows that need the LM head
    greedy = model.logits(h[text_rows]).argmax(-1).tolist() if text_rows else []
    visual_rows = [i for i, r in enumerate(rows) if r.mode == "visual"]
    if visual_rows:  # all rows in visual mode at once: v = adapter_out(h), next input = adapter_in(v)
        v_all = model.llm_to_visual(h[visual_rows], [tasks[i] for i in visual_rows])  # (b, vision_dim)
        index = torch.tensor([len(rows[i].visual) for i in visual_rows], device=v_all.device)  # (b,) in the image
        next_embeds[visual_rows] = model.visual_to_llm(v_all, index, [tasks[i] for i in visual_rows], answer=True)
    for i, r in enumerate(rows):
        if r.mode == "visual":
            yield from _add_visual(i, r, v_all[visual_rows.index(i)], count, seq)
        elif r.mode == "done":
            next_embeds[i] = eos_embed  # finished rows only keep the batch aligned
        else:
            token = r.queue.pop(0) if r.queue else greedy[text_rows.index(i)]
            next_embeds[i] = model.embed_tokens(torch.tensor([token]))[0]
            yield from _add_text(i, r, token, model.tokenizer, seq.eos_token_id)


def _add_visual(i: int, r: _Row, v: torch.Tensor, count: int, seq):
    """Row i in visual mode takes the visual token v (vision_dim,); after the N-th, `</Img>` is queued."""
    r.visual.append(v)
    yield VisualToken(i, len(r.visual) - 1, count, v)
    if len(r.visual) == count:
        r.mode, r.image_done, r.queue = "text", True, list(seq.end_ids)
        yield ImageDone(i, torch.stack(r.visual))


def _add_text(i: int, r: _Row, token: int, tokenizer, eos: int):
    """Row i in text mode takes `token`: the end-of-turn finishes it, a text ending in `<Img>` opens an image."""
    r.text_ids.append(token)
    new_text = tokenizer.decode(r.text_ids, skip_special_tokens=False)
    piece, r.text = new_text[len(r.text) :], new_text
    if token == eos:
        r.mode = "done"
        yield Finished(i, _clean(r.text, tokenizer), _tokens(r))
        return
    if piece:
        yield TextPiece(i, piece)
    if not r.image_done:
        r.text_since_image += 1
        if r.text.endswith(IMG_BEGIN) and not r.queue:
            r.mode = "visual"


def _tokens(row: _Row) -> torch.Tensor | None:
    return torch.stack(row.visual) if row.visual else None


def _clean(text: str, tokenizer) -> str:
    eos = tokenizer.eos_token
    return text[: text.index(eos)] if eos and eos in text else text


def _fill_constant_prefix(model, cache, batch: int) -> int:
    """Write the model's cached keys and values of the constant text before the LQ image into every row of `cache`;
    returns how many positions that filled (0 where the model has no such cache)."""
    prefix = model.constant_prefix()  # [(1, kv_heads, P, head_dim) x 2] per layer
    for index, (keys, values) in enumerate(prefix):
        positions = torch.arange(keys.shape[-2], device=keys.device)
        cache.update(
            keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), index, {"cache_position": positions}
        )
    return prefix[0][0].shape[-2] if prefix else 0


def _new_cache(model, length: int):
    """A KV cache preallocated for `length` positions: a growing cache copies every layer's keys and values at each
    step, which cost about half of a batch-32 decoding step on the CPU (bench/generation_speed.py)."""
    from transformers import StaticCache

    return StaticCache(config=model.llm.config, max_cache_len=length)
