"""engines.schedule: the VJP plan under budgets and the operations of a pass.

Every engine lowers these operations and decides nothing itself, so what is
checked here holds for all of them: each layer runs forward once and backward
once, checkpoints sit where the recomputations restart, a segment recomputes
exactly the layers between its checkpoint and its last backward step, and a
weight slot holds Z^l whenever an operation reads it without drawing it.
"""

import itertools

import numpy as np
import pytest
from oracle_cases import make_config

from vxsim.engines import schedule
from vxsim.engines.schedule import Backward, Forward, Plan, Recompute, Restart


def _record(depth):
    return np.arange(depth + 1) - 1  # layer l recorded at position l - 1, layer 0 not


def _plans(depth):
    keep = [Plan(depth, True, w, False) for w in (True, False)]
    every = sorted({1, 2, 3, max(1, int(np.ceil(np.sqrt(depth)))), depth - 1, depth, depth + 4})
    return keep + [Plan(k, False, w, False) for k in every if k >= 1 for w in (True, False)]


def _simulate(depth, plan):
    """Run the ops symbolically: which states, checkpoints and weight slots exist when."""
    rec = _record(depth)
    fwd = schedule.forward_ops(depth, plan, rec)
    bwd = schedule.backward_ops(depth, plan, rec)
    assert [op.layer for op in fwd] == list(range(1, depth + 1))
    kept, checkpoints, slots = set(), {-1: 0}, {}
    for op in fwd:
        assert isinstance(op, Forward) and op.record == rec[op.layer]
        slots[op.slot] = op.layer
        if op.keep:
            kept.add(op.layer)
        if op.checkpoint >= 0:
            assert op.checkpoint not in checkpoints
            checkpoints[op.checkpoint] = op.layer
    states, backward = set(kept) | {0}, []
    for op in bwd:
        if isinstance(op, Restart):
            assert checkpoints[op.checkpoint] == op.start  # restarts where it checkpointed
            states = {op.start} | kept
        elif isinstance(op, Recompute):
            assert op.layer - 1 in states and op.layer > op.start
            states.add(op.layer)
            slots[op.slot] = op.layer
        else:
            assert isinstance(op, Backward)
            assert op.layer - 1 in states, (op, states)  # its input state is there
            if op.draw:
                slots[op.slot] = op.layer
            assert slots[op.slot] == op.layer, (op, slots)  # and Z^l, drawn or kept
            assert op.record == rec[op.layer - 1]
            backward.append(op.layer)
    return fwd, bwd, checkpoints, backward


@pytest.mark.parametrize("depth", [1, 2, 3, 7, 10, 16, 30])
def test_every_layer_once_forward_and_once_backward(depth):
    for plan in _plans(depth):
        fwd, bwd, checkpoints, backward = _simulate(depth, plan)
        assert backward == list(range(depth, 1, -1)), plan  # g^{L-1} .. g^1, in order
        draws = [op.layer for op in bwd if isinstance(op, Recompute) or getattr(op, "draw", 0)]
        if plan.keep_all:
            assert not any(isinstance(op, (Restart, Recompute)) for op in bwd)
            assert [op.keep for op in fwd] == [layer < depth for layer in range(1, depth + 1)]
            assert all(op.checkpoint == -1 for op in fwd)
            # kept weights: nothing drawn again; else all but Z^L (still in its slot)
            assert draws == ([] if plan.keep_weights else list(range(depth - 1, 1, -1)))
        else:
            k = plan.every
            assert sorted(checkpoints.values())[1:] == list(range(k, depth, k)), plan
            assert not any(op.keep for op in fwd)
            recomputed = [op.layer for op in bwd if isinstance(op, Recompute)]
            # every layer but the checkpointed ones and L, once each
            assert sorted(recomputed) == [layer for layer in range(1, depth) if layer % k], plan
            if plan.keep_weights:  # one draw per layer: its recomputation's or a segment's last
                assert len(draws) == len(set(draws))
                assert set(range(2, depth + 1)) <= set(draws)


def test_checkpoint_index():
    got = [schedule.checkpoint_index(layer, 3, 10) for layer in range(11)]
    assert got == [-1, -1, -1, 0, -1, -1, 1, -1, -1, 2, -1]  # l = 3, 6, 9 < 10
    assert schedule.checkpoint_index(9, 3, 9) == -1  # never the last layer
    assert schedule.checkpoint_index(4, 0, 10) == -1  # no checkpoints
    for depth, every in itertools.product(range(1, 40), range(1, 12)):
        used = [schedule.checkpoint_index(layer, every, depth) for layer in range(depth + 1)]
        used = [c for c in used if c >= 0]
        assert used == list(range(len(used)))  # consecutive from 0
        assert len(used) <= schedule.checkpoint_count(depth, every)


def test_plan_under_budgets(monkeypatch):
    cfg = make_config(width=8, depth=20, mode="vjp")
    k = cfg.checkpoint_every
    layer = schedule.LayerBytes(state=100, weights=30, steps=50)
    plan = schedule.vjp_plan
    assert plan(cfg, layer, 20 * 180) == Plan(20, True, True, True)
    assert plan(cfg, layer, 20 * 180 - 1) == Plan(20, True, True, False)
    assert plan(cfg, layer, 20 * 130 - 1) == Plan(20, True, False, False)
    assert plan(cfg, layer, 20 * 100 - 1) == Plan(k, False, True, False)
    # an engine that keeps no state without its weights checkpoints instead
    assert plan(cfg, layer, 20 * 130 - 1, weights_with_state=True) == Plan(k, False, True, False)
    assert plan(cfg, layer, 20 * 130, weights_with_state=True) == Plan(20, True, True, False)
    # tied weights (0 bytes) are never "kept"
    assert plan(cfg, layer._replace(weights=0), 10**9) == Plan(20, True, False, True)
    # a segment's weights: kept while k of them fit in ZSTORE_BYTES
    monkeypatch.setattr(schedule, "ZSTORE_BYTES", k * 30)
    assert plan(cfg, layer, 0) == Plan(k, False, True, False)
    monkeypatch.setattr(schedule, "ZSTORE_BYTES", k * 30 - 1)
    assert plan(cfg, layer, 0) == Plan(k, False, False, False)
    monkeypatch.undo()
    # engine.checkpoint set, or depth 1: checkpoints whatever the budget
    spaced = make_config("engine.checkpoint=6", width=8, depth=20, mode="vjp")
    assert plan(spaced, layer, 10**12) == Plan(6, False, True, False)
    one = make_config(width=8, depth=1, mode="vjp")
    assert plan(one, layer, 10**12) == Plan(1, False, False, False)


def test_store_budget():
    assert schedule.store_budget(8 * 2**30, 2**30) == 2**30
    assert schedule.store_budget(2**30, 2**40) == 2**28  # a quarter of what is free
    assert schedule.store_budget(None, 2**30) == 2**28  # unknown: a quarter of the most
    assert schedule.store_budget(2**40, 2**30, override=0) == 0
