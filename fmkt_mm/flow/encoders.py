"""Meta-encoders: shape-preserving networks ``g(Z, t[, context]) -> (B, C, ...)``.

Every encoder accepts feature maps ``(B, C, H, W)`` and vectors ``(B, C)``
(treated as ``1 x 1`` maps). Time enters additively: a sinusoidal embedding of
``t`` goes through a small MLP to ``C`` channels and is added to the input,
broadcast over ``H, W``. An optional context vector ``(B, context_dim)`` (a
pooled image summary, a task or class embedding) enters the same way, so any
encoder becomes a conditional flow network by setting ``context_dim``.

The output layer starts at zero: an untrained flow predicts zero velocity,
i.e. it starts as the identity on the student representation.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .catalog import META_ENCODERS


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """``(B,)`` times in ``(0, 1]`` -> ``(B, dim)`` sin/cos features (DDPM-style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def pointwise(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear`` applied over the channels of a ``(B, in, H, W)`` map, as
    a ``1 x 1`` convolution with the same weights."""
    return F.conv2d(x, linear.weight.view(*linear.weight.shape, 1, 1), linear.bias)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] == x.shape[3] == 1:
            return self.single_position(x, *self.map_affine())
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def map_affine(self) -> Tuple[Tensor, Tensor]:
        """The affine weight and bias as ``(C, 1, 1)`` views."""
        return self.norm.weight.view(-1, 1, 1), self.norm.bias.view(-1, 1, 1)

    def single_position(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """The norm of a ``(B, C, 1, 1)`` map (vectors), over its last three
        dims at once, without permutes; ``weight, bias``: :meth:`map_affine`."""
        return F.layer_norm(x, x.shape[1:], weight, bias, self.norm.eps)


class PositionContext:
    """A context per group of positions of a ``(B, C, 1, P)`` token map:
    ``contexts`` ``(G, B, dim)`` and ``counts`` (positions per group, first
    group first, summing to ``P``). Several FPN levels carried in one call
    of a token-wise meta-encoder (their positions concatenated) each keep
    their own context this way. The meta-encoder embeds the ``G * B`` rows
    once and spreads each group's embedding over its positions."""

    def __init__(self, contexts: Tensor, counts: Sequence[int], embedded: Optional[Tensor] = None) -> None:
        self.contexts, self.counts, self.embedded = contexts, list(counts), embedded

    def embed(self, embed_rows: Callable[[Tensor], Tensor]) -> 'PositionContext':
        g, b = self.contexts.shape[:2]
        rows = embed_rows(self.contexts.flatten(0, 1))  # (G * B, C)
        return PositionContext(self.contexts, self.counts, rows.unflatten(0, (g, b)))

    def embedded_map(self, channels: int) -> Tensor:
        """``(B, C, 1, P)``: each group's embedding over its positions."""
        g, b = self.embedded.shape[:2]
        parts = [self.embedded[k][:, :, None, None].expand(b, channels, 1, n) for k, n in enumerate(self.counts)]
        return torch.cat(parts, dim=3)

    def __getitem__(self, rows) -> 'PositionContext':
        """The context of a slice of the batch (rows of every group)."""
        return PositionContext(self.contexts[:, rows], self.counts)


class MetaEncoder(nn.Module):
    """Base class: time (and context) embedding, vector handling, zero output.

    Subclasses implement :meth:`body` on ``(B, C, H, W)`` maps and name their
    last layer ``self.output`` (zero-initialised here).
    """

    def __init__(self, channels: int, time_dim: int = 128, context_dim: Optional[int] = None) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f'meta-encoder channels must be >= 1, got {channels}')
        self.channels, self.time_dim, self.context_dim = channels, time_dim, context_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.context_mlp = None if context_dim is None else nn.Sequential(
            nn.Linear(context_dim, channels), nn.SiLU(), nn.Linear(channels, channels))

    def init_output(self) -> None:
        nn.init.zeros_(self.output.weight)
        if self.output.bias is not None:
            nn.init.zeros_(self.output.bias)

    def body(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, t: Optional[Tensor] = None, context: Optional[Tensor] = None, *,
                conditioning: Optional[Tensor] = None) -> Tensor:
        """x: ``(B, C)`` or ``(B, C, H, W)``; t: ``(B,)`` or a scalar tensor;
        context: ``(B, context_dim)`` when the encoder is conditional.

        The transfer loop calls ``encoder(x, conditioning=c)`` instead, with
        ``x`` a ``(B, C, H, W)`` state and ``c`` one entry of
        :meth:`step_inputs` (see :meth:`step`)."""
        if conditioning is not None:
            return self.step(x, conditioning)
        is_vector = x.dim() == 2
        if is_vector:
            x = x[:, :, None, None]
        self.check_input(x)
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1)
        cond = self.time_mlp(sinusoidal_embedding(t, self.time_dim).to(x.dtype))
        context = self._context_embedding(context, x.dtype)
        if context is not None:
            cond = cond + context
        out = self.body(x + cond[:, :, None, None])
        return out[:, :, 0, 0] if is_vector else out

    # -- the transfer loop's form: conditioning once per run, then one call per step --
    def conditioning(self, times: Sequence[float], context: Optional[Tensor], like: Tensor) -> Tensor:
        """The additive conditioning of every step of a run, ``(N, B', C, 1,
        1)`` (``B' = 1`` without a context): the time MLP runs once on the
        ``N`` step times (their sinusoidal features are cached per times and
        device), the context MLP once on ``context``. ``like`` gives device
        and dtype (a state of the run).

        The time MLP's linear layers run as ``1 x 1`` convolutions of the
        ``(N, time_dim, 1, 1)`` table, on the same weights: one operator
        forward and one backward per layer, where a linear layer dispatches
        transposes, a matrix product and, backward, two more and a bias sum."""
        key = (tuple(float(t) for t in times), like.device)
        table = self._time_tables.get(key)
        if table is None:
            table = sinusoidal_embedding(torch.tensor(key[0], device=like.device), self.time_dim)
            table = self._time_tables[key] = table[:, :, None, None]
        first, act, second = self.time_mlp
        cond = pointwise(second, act(pointwise(first, table.to(like.dtype))))  # (N, C, 1, 1)
        cond = cond.view(len(times), 1, self.channels, 1, 1)
        context = self._context_embedding(context, like.dtype)
        if isinstance(context, PositionContext):  # a context per group of positions: (N, B, C, 1, P)
            cond = cond + context.embedded_map(self.channels)[None]
        elif context is not None:
            cond = cond + context[:, :, None, None]  # (N, B, C, 1, 1)
        return cond

    def step_inputs(self, times: Sequence[float], context: Optional[Tensor], like: Tensor) -> Sequence[Any]:
        """What :meth:`step` takes at each step of a run, one entry per step
        (by default each step's :meth:`conditioning`, expanded to ``like``'s
        shape), computed once per run."""
        # (N, B, C, H, W): each step adds without broadcasting, so the backward
        # pass reduces over batch and space once for all steps, not once per step
        return self.conditioning(times, context, like).expand(-1, *like.shape).unbind(0)

    def step(self, x: Tensor, conditioning: Tensor) -> Tensor:
        """One call of the loop: ``body(x + conditioning)`` on a ``(B, C, H,
        W)`` state, with one entry of :meth:`step_inputs`."""
        return self.body(x + conditioning)

    @property
    def _time_tables(self) -> Dict[Tuple, Tensor]:
        tables = self.__dict__.get('_time_table_cache')
        if tables is None:  # a plain attribute: never in the state dict, rebuilt on demand
            tables = self.__dict__['_time_table_cache'] = {}
        return tables

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f'{type(self).__name__} expects (B, {self.channels}) or (B, {self.channels}, H, W) '
                f'inputs, got {tuple(x.shape)}; set the flow\'s channels to {x.shape[1] if x.dim() > 1 else "?"} '
                f'or add an adapter in front of it')

    def _context_embedding(self, context, dtype) -> Optional[Union[Tensor, 'PositionContext']]:
        if isinstance(context, PositionContext):  # each group's context embedded once, not per position
            return context.embed(lambda rows: self._context_embedding(rows, dtype))
        if context is not None:
            if self.context_mlp is None:
                raise ValueError(f'{type(self).__name__} got a context but was built without '
                                 f'context_dim; set context_dim={context.shape[-1]} to condition it')
            return self.context_mlp(context.to(dtype))
        if self.context_mlp is not None:
            raise ValueError(f'{type(self).__name__} was built with context_dim={self.context_dim} '
                             f'and needs a context tensor of shape (B, {self.context_dim})')
        return None


@META_ENCODERS.register('mlp')
class MLPMetaEncoder(MetaEncoder):
    """Token-wise MLP: ``num_blocks`` x [x + W2 GELU(W1 LN(x))] (1x1 convs), then
    a 1x1 output layer."""

    #: every position is transformed on its own (1x1 layers, a norm over
    #: channels): positions of several maps can share one call
    token_wise = True

    def __init__(self, channels: int, hidden_ratio: float = 2.0, num_blocks: int = 1, **kwargs: Any) -> None:
        super().__init__(channels, **kwargs)
        hidden = max(1, int(round(channels * hidden_ratio)))
        self.blocks = nn.ModuleList(nn.Sequential(
            ChannelLayerNorm(channels), nn.Conv2d(channels, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, channels, 1)) for _ in range(num_blocks))
        self.output = nn.Conv2d(channels, channels, 1)
        self.init_output()

    def step_inputs(self, times: Sequence[float], context: Optional[Tensor],
                    like: Tensor) -> List[Tuple[Tensor, Optional[List[Tuple[Tensor, Tensor]]]]]:
        """As :meth:`MetaEncoder.step_inputs`, each entry paired with every
        block's norm affine as ``(C, 1, 1)`` views on vectors (``1 x 1``
        maps; None otherwise), made once per run, so that a step normalises
        without permutes (:meth:`ChannelLayerNorm.single_position`)."""
        single = like.shape[2] == like.shape[3] == 1
        norms = [block[0].map_affine() for block in self.blocks] if single else None
        return [(c, norms) for c in super().step_inputs(times, context, like)]

    def step(self, x: Tensor, conditioning: Tuple[Tensor, Optional[Sequence[Tuple[Tensor, Tensor]]]]) -> Tensor:
        """One call of the loop with one entry of :meth:`step_inputs`:
        ``(conditioning, norm affines or None)``."""
        conditioning, norms = conditioning
        return self.body(x + conditioning, norms)

    def body(self, x: Tensor, norms: Optional[Sequence[Tuple[Tensor, Tensor]]] = None) -> Tensor:
        for i, (norm, first, act, second) in enumerate(self.blocks):
            h = norm(x) if norms is None else norm.single_position(x, *norms[i])
            x = x + second(act(first(h)))
        return self.output(x)


@META_ENCODERS.register('conv')
class ConvMetaEncoder(MetaEncoder):
    """``num_blocks`` x [SiLU, 3x3 conv, GroupNorm(1, C), SiLU, 3x3 conv] with
    residuals, then a 3x3 output conv."""

    def __init__(self, channels: int, num_blocks: int = 1, **kwargs: Any) -> None:
        super().__init__(channels, **kwargs)
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(1, channels),
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)) for _ in range(num_blocks))
        self.output = nn.Conv2d(channels, channels, 3, padding=1)
        self.init_output()

    def body(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return self.output(x)


class WindowAttentionBlock(nn.Module):
    """Pre-norm (shifted-)window self-attention + FFN on ``(B, C, H, W)``.

    The map is padded to a multiple of the window; a shifted block rolls it by
    half a window and masks attention between regions that were not adjacent
    before the roll (as in Swin).
    """

    def __init__(self, channels: int, num_heads: int, window: Optional[int], shift: bool,
                 ffn_ratio: float) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'transformer meta-encoder: channels ({channels}) must be divisible '
                             f'by num_heads ({num_heads}); change num_heads')
        self.num_heads, self.window, self.shift = num_heads, window, shift
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def _window_size(self, h, w):
        if self.window:
            return min(self.window, max(h, w))
        return 7 if h % 7 == 0 and w % 7 == 0 else max(h, w)  # whole map when 7 does not fit

    @staticmethod
    def _partition(x, ws):  # (B, Hp, Wp, C) -> (B * nW, ws * ws, C)
        b, h, w, c = x.shape
        if h == w == ws:  # one window: the map's tokens in order
            return x.reshape(b, ws * ws, c)
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, ws * ws, c)

    @staticmethod
    def _merge(windows, b, hp, wp, ws):  # the inverse of _partition: (B * nW, L, C) -> (B, Hp, Wp, C)
        c = windows.shape[-1]
        if hp == wp == ws:
            return windows.view(b, hp, wp, c)
        windows = windows.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        return windows.reshape(b, hp, wp, c)

    def _shift_mask(self, hp, wp, ws, s, device):
        region = torch.zeros(1, hp, wp, 1, device=device)
        cuts = (slice(0, -ws), slice(-ws, -s), slice(-s, None))
        for i, hs in enumerate(cuts):
            for j, wsl in enumerate(cuts):
                region[:, hs, wsl, :] = i * 3 + j
        ids = self._partition(region, ws).squeeze(-1)  # (nW, ws*ws)
        return ids[:, :, None] == ids[:, None, :]  # True where attention is allowed

    def _batch_mask(self, b, hp, wp, ws, s, device) -> Tensor:
        """The shift mask of a batch, ``(B * nW, 1, L, L)``: a constant of the
        geometry, built once and kept (a plain attribute, never saved)."""
        masks = self.__dict__.setdefault('_mask_cache', {})
        key = (b, hp, wp, ws, s, device)
        mask = masks.get(key)
        if mask is None:
            if len(masks) >= 8:  # batch sizes and map sizes of one run are few
                masks.clear()
            mask = masks[key] = self._shift_mask(hp, wp, ws, s, device).repeat(b, 1, 1)[:, None]
        return mask

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        ws = self._window_size(h, w)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        y = self.norm1(tokens)
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        s = ws // 2 if self.shift and ws > 1 and min(hp, wp) > ws else 0
        if s:
            y = torch.roll(y, (-s, -s), dims=(1, 2))
        windows = self._partition(y, ws)  # (B*nW, L, C)
        qkv = self.qkv(windows).view(windows.shape[0], -1, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B*nW, heads, L, d)
        mask = self._batch_mask(b, hp, wp, ws, s, x.device) if s else None
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        attn = self.proj(attn.transpose(1, 2).reshape(windows.shape[0], -1, c))
        attn = self._merge(attn, b, hp, wp, ws)
        if s:
            attn = torch.roll(attn, (s, s), dims=(1, 2))
        if pad_h or pad_w:
            attn = attn[:, :h, :w]
        tokens = tokens + attn
        tokens = tokens + self.ffn(self.norm2(tokens))
        return tokens.permute(0, 3, 1, 2)


@META_ENCODERS.register('transformer')
class TransformerMetaEncoder(MetaEncoder):
    """``num_blocks`` pre-norm window-attention blocks (every second one
    shifted), then a 1x1 output layer. ``window=None`` uses 7 when both sides
    divide by 7 and the whole map otherwise."""

    def __init__(self, channels: int, num_blocks: int = 1, num_heads: int = 4,
                 window: Optional[int] = None, ffn_ratio: float = 2.0, shift_first: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(channels, **kwargs)
        self.blocks = nn.ModuleList(
            WindowAttentionBlock(channels, num_heads, window, shift=(i % 2 == 0) == shift_first,
                                 ffn_ratio=ffn_ratio) for i in range(num_blocks))
        self.output = nn.Conv2d(channels, channels, 1)
        self.init_output()

    def body(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.output(x)
