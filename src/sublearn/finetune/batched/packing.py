"""Reply rows packed per model, and attention rows bucketed by length."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import torch

# Attention runs on rows sorted by length in this many groups, each padded to its own
# longest row: padding every row to the longest of all N*B rows cost 2-3x the attention
# work on the demo's data (rows of 60-190 tokens).
_ATTENTION_BUCKETS = 8


def _n_reply(row: list[int] | int, start: int) -> int:
    """How many positions of a row (or of a row this long) predict its reply tokens."""
    return max(0, (row if isinstance(row, int) else len(row)) - start)


@dataclass(frozen=True)
class _Packed:
    """A step's rows for N models, packed token after token.

    Per-token work (embeddings, norms, projections, MLP) runs on the packed tokens,
    ``(N, L, ...)`` with L the most tokens any model has, instead of on ``(N, B, T)``
    rows padded to the longest row of all N*B: on the demo's data that is about 40%
    less work. Only attention needs rows: ``to_rows`` gathers the packed tokens into
    buckets of rows of similar length, ``to_packed`` brings the outputs back.

    The loss reads the last layer at the picked positions only (those predicting reply
    tokens, the tail of each row), so there attention runs with those queries alone:
    ``query_slots`` lays the picked tokens out per bucket row, ``query_masks`` lets each
    see the keys up to its position, ``from_query_slots`` brings the outputs back.

    Attributes:
        ids: ``(N, L)`` token ids; the tail after a model's tokens holds the pad id.
        positions: ``(N, L)`` each token's position in its row (0 on the tail).
        to_rows: ``(S,)`` for each slot of the buckets' ``(rows, width)`` layouts laid
            end to end, its packed flat index. A row's padding points at the row's last
            token: with right padding and a causal mask, padded slots only attend to,
            or are attended by, padded slots, which nothing reads.
        to_packed: ``(N*L,)`` for each packed token, its slot (the tail points at slot
            0; nothing reads it).
        buckets: ``(rows, width)`` of each bucket, in the order of their slots.
        picks: ``(N, M)`` packed indices of the positions that predict reply tokens,
            row by row as ``train_kl`` concatenates them, padded with 0 to the most
            any model has.
        pick_positions: ``(N, M)`` the picked tokens' positions in their rows.
        valid: ``(N, M)`` bool, False on the padding of ``picks``.
        query_slots: ``(Q,)`` for each slot of the buckets' ``(rows, queries)`` layouts,
            its flat index into the picks (a row's padding repeats its last pick).
        from_query_slots: ``(N*M,)`` for each pick, its query slot (padding: slot 0).
        query_masks: per bucket, ``(rows, 1, queries, width)`` bool, True on the keys a
            query may attend to (its row's tokens up to its own position).
    """

    ids: torch.Tensor
    positions: torch.Tensor
    to_rows: torch.Tensor
    to_packed: torch.Tensor
    buckets: tuple[tuple[int, int], ...]
    picks: torch.Tensor
    pick_positions: torch.Tensor
    valid: torch.Tensor
    query_slots: torch.Tensor
    from_query_slots: torch.Tensor
    query_masks: tuple[torch.Tensor, ...]

    @classmethod
    def build(
        cls,
        rows: list[list[list[int]]],
        starts: list[list[int]],
        pad: int,
        device: Any,
        n_picks: int | None = None,
    ) -> _Packed:
        """Pack per-model rows of token ids.

        Args:
            rows: per model, its token rows.
            starts: per model, where each row's reply starts (at least 1; past the row's
                end when max_length cut the reply off, which leaves the row no picks).
            pad: the pad token id.
            device: where the tensors go.
            n_picks: pad ``picks`` to this many positions (default: the most needed).
        """
        n = len(rows)
        length = max(sum(len(r) for r in model_rows) for model_rows in rows)
        # A prompt cut by max_length leaves a row no reply tokens (train_kl's slice is empty).
        counts = [
            sum(_n_reply(r, s) for r, s in zip(mr, ms, strict=True))
            for mr, ms in zip(rows, starts, strict=True)
        ]
        m_max = max(1, n_picks if n_picks is not None else max(counts))
        ids: list[int] = []
        positions: list[int] = []
        # Per row, over all models: model, first packed index, length, reply start, first pick.
        models: list[int] = []
        firsts: list[int] = []
        sizes: list[int] = []
        row_starts: list[int] = []
        first_picks: list[int] = []
        picks: list[int] = []
        pick_positions: list[int] = []
        for m, (model_rows, model_starts) in enumerate(zip(rows, starts, strict=True)):
            offset = 0  # where the row starts among this model's packed tokens
            for row, start in zip(model_rows, model_starts, strict=True):
                models.append(m)
                firsts.append(m * length + offset)
                sizes.append(len(row))
                row_starts.append(start)
                first_picks.append(len(picks))
                picks.extend(range(offset + start - 1, offset + len(row) - 1))
                pick_positions.extend(range(start - 1, len(row) - 1))  # empty if no reply
                ids.extend(row)
                positions.extend(range(len(row)))
                offset += len(row)
            ids.extend([pad] * (length - offset))
            positions.extend([0] * (length - offset))
            filler = m_max * (m + 1) - len(picks)
            picks.extend([0] * filler)
            pick_positions.extend([0] * filler)

        order = sorted(range(len(sizes)), key=sizes.__getitem__)
        n_buckets = min(_ATTENTION_BUCKETS, len(order))
        to_rows: list[int] = []
        to_packed = [0] * (n * length)
        query_slots: list[int] = []
        from_query_slots = [0] * (n * m_max)
        buckets = []
        query_positions: list[int] = []  # per query slot, the position of its query
        for k in range(n_buckets):
            members = order[k * len(order) // n_buckets : (k + 1) * len(order) // n_buckets]
            width = sizes[members[-1]]  # sorted: the last is the longest
            n_queries = max(1, *(sizes[g] - row_starts[g] for g in members))
            for g in members:
                first, size, start, first_pick = firsts[g], sizes[g], row_starts[g], first_picks[g]
                slot = len(to_rows)
                to_packed[first : first + size] = range(slot, slot + size)
                to_rows.extend(range(first, first + size))
                to_rows.extend([first + size - 1] * (width - size))
                count = _n_reply(size, start)
                slot = len(query_slots)
                from_query_slots[first_pick : first_pick + count] = range(slot, slot + count)
                query_slots.extend(range(first_pick, first_pick + count))
                if count:
                    query_slots.extend([first_pick + count - 1] * (n_queries - count))
                    query_positions.extend(range(start - 1, start - 1 + count))
                    query_positions.extend([start + count - 2] * (n_queries - count))
                else:  # no pick: any pick slot will do, seeing its row's first key
                    query_slots.extend([models[g] * m_max] * n_queries)
                    query_positions.extend([0] * n_queries)
            buckets.append((len(members), width, n_queries))

        def tensor(values: list[int], *shape: int) -> torch.Tensor:
            # Through an int64 array: about 8x faster than torch.tensor on a list.
            return torch.frombuffer(array("q", values), dtype=torch.long).view(*shape).to(device)

        masks = []
        q_pos = tensor(query_positions, len(query_positions))
        for (n_rows, width, n_queries), pos in zip(
            buckets, q_pos.split([r * q for r, _, q in buckets]), strict=True
        ):
            keys = torch.arange(width, device=q_pos.device)
            masks.append(keys <= pos.view(n_rows, 1, n_queries, 1))  # (R, 1, Q, W)
        valid = torch.arange(m_max) < torch.tensor(counts)[:, None]  # (N, M)
        return cls(
            ids=tensor(ids, n, length),
            positions=tensor(positions, n, length),
            to_rows=tensor(to_rows, len(to_rows)),
            to_packed=tensor(to_packed, n * length),
            buckets=tuple((r, w) for r, w, _ in buckets),
            picks=tensor(picks, n, m_max),
            pick_positions=tensor(pick_positions, n, m_max),
            valid=valid.to(device),
            query_slots=tensor(query_slots, len(query_slots)),
            from_query_slots=tensor(from_query_slots, n * m_max),
            query_masks=tuple(masks),
        )
