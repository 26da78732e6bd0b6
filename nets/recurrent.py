"""Batch-major recurrent layers: LSTM and GRU over whole sequences."""

from __future__ import annotations

import chex
import haiku as hk
import jax


class _Recurrent(hk.Module):
    """Unrolls a Haiku RNN core over [B, T, F] inputs from a zero state."""

    _core_cls: type[hk.RNNCore]

    def __init__(
        self,
        hidden_size: int,
        *,
        return_sequences: bool = True,
        name: str | None = None,
    ):
        """Builds the module.

        Args:
          hidden_size: size of the hidden state H.
          return_sequences: return every step [B, T, H] (True) or only the last
            one [B, H] (False).
          name: module name.
        """
        super().__init__(name=name)
        if (
            isinstance(hidden_size, bool)
            or not isinstance(hidden_size, int)
            or hidden_size <= 0
        ):
            raise ValueError(
                f"hidden_size: expected a positive int, got {hidden_size!r}"
            )
        if not isinstance(return_sequences, bool):
            raise ValueError(
                f"return_sequences: expected a bool, got {return_sequences!r}"
            )
        self.hidden_size = hidden_size
        self.return_sequences = return_sequences

    def __call__(self, x: jax.Array, is_training: bool = False) -> jax.Array:
        """Runs the core over time.

        Args:
          x: inputs [B, T, F] (batch-major).
          is_training: unused; accepted for a uniform interface.

        Returns:
          [B, T, H] if `return_sequences`, else the last step [B, H].
        """
        del is_training
        chex.assert_rank(x, 3)
        core = self._core_cls(self.hidden_size)
        initial_state = core.initial_state(x.shape[0])
        # dynamic_unroll scans over the leading axis; time_major=False makes it
        # transpose [B, T, F] -> [T, B, F] and back.
        outputs, _ = hk.dynamic_unroll(core, x, initial_state, time_major=False)
        if self.return_sequences:
            return outputs  # [B, T, H]
        return outputs[:, -1]  # [B, H]


class LSTM(_Recurrent):
    """LSTM (Hochreiter & Schmidhuber 1997) over [B, T, F] -> [B, T, H] or [B, H]."""

    _core_cls = hk.LSTM


class GRU(_Recurrent):
    """GRU (Cho et al. 2014) over [B, T, F] -> [B, T, H] or [B, H]."""

    _core_cls = hk.GRU
