"""The torch side of a comparison computes on one shared working copy per dtype and jitters block by block: the
numbers must be exactly those of a fresh deep copy per computation and of one whole-tensor draw (torch only, a
model of a few hundred parameters: no MindSpore)."""
import copy
import io

import numpy as np
import pytest
import torch

from parity.engine.loss import PROJECTION, projection_weights
from parity.engine.tolerance import JITTER, JITTER_BLOCK, JitteredState, jitter_fn, jitter_generator
from parity.engine.torch_side import LayerErrorSide, TorchSide, WorkingCopy, numpy_state


def _whole_tensor_jitter(seed, amount):
    """The jitter in one whole-tensor draw per array (the definition the block-by-block samples must keep)."""
    rng = jitter_generator(seed)
    return lambda a: (a * (1.0 - amount + 2.0 * amount * rng.random(a.shape))).astype(np.float32)


def test_block_jitter_is_bit_identical_to_one_whole_tensor_draw():
    rng = np.random.RandomState(0)
    arrays = [rng.standard_normal(shape).astype(np.float32)
              for shape in [(3, 4), (), (0,), (2 * JITTER_BLOCK + 7,), (8, 3, 3, 3)]]
    arrays.append(rng.standard_normal((40, 50)).astype(np.float32).T)   # not C-contiguous
    for amount in (JITTER, 2.0 ** -24):
        new, old = jitter_fn(5, amount), _whole_tensor_jitter(5, amount)
        for a in arrays:
            got, want = new(a), old(a)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    ints = np.arange(4)
    assert jitter_fn(5)(ints) is ints   # other dtypes pass through, drawing nothing


def test_jitter_after_continues_the_states_sequence():
    rng = np.random.RandomState(1)
    state = {"w": rng.standard_normal((JITTER_BLOCK + 3,)).astype(np.float32), "n": np.arange(3),
             "b": rng.standard_normal((5,)).astype(np.float32)}
    x = rng.standard_normal((2, 3)).astype(np.float32)

    def sequential(amount):
        """The state then ``x``, in one sequence of whole-tensor draws."""
        jitter = _whole_tensor_jitter(9, amount)
        return {k: jitter(v) if v.dtype == np.float32 else v for k, v in state.items()}, jitter(x)

    jittered = JitteredState(state, 9, JITTER)
    want_state, want_x = sequential(JITTER)
    for k, v in jittered.items():
        np.testing.assert_array_equal(v, want_state[k])
    np.testing.assert_array_equal(jittered.jitter_after([x])[0], want_x)
    # another amount of the same seed shares the skipped draws (computed once, here by the first state)
    finer = jittered.with_amount(2.0 ** -24)
    np.testing.assert_array_equal(finer.jitter_after([x])[0], sequential(2.0 ** -24)[1])
    np.testing.assert_array_equal(JitteredState(state, 9, 2.0 ** -24).jitter_after([x])[0], sequential(2.0 ** -24)[1])


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU(inplace=True)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    module = _Tiny()
    state = numpy_state(module)
    x = np.random.RandomState(2).standard_normal((4, 2, 5, 5)).astype(np.float32)
    loss_args = projection_weights([(4, 3)], 0)
    return module, state, x, loss_args


def _everything(side, x, loss_args):
    """Every computation of a side, as numpy copies."""
    outs, loss, buffers = side.train_forward([x], loss_args)
    grads = side.grads([x], loss_args, bn_train=True)
    steps = side.optimizer_steps([grads, grads], lr=0.1, momentum=0.9, weight_decay=1e-4)
    return {**{f"eval {k}": v for k, v in side.eval_outputs([x]).items()},
            **{f"train {k}": v for k, v in outs.items()}, "loss": loss,
            **{f"buffer {k}": v for k, v in buffers.items()}, **{f"grad {k}": v for k, v in grads.items()},
            **{f"step {k}": v for k, v in steps.items()}}


def test_sides_sharing_a_working_copy_compute_what_fresh_copies_compute(tiny):
    module, state, x, loss_args = tiny
    working = WorkingCopy(module)
    sides = [TorchSide(module, JitteredState(state, seed, JITTER), "float32", PROJECTION, working)
             for seed in (100, 101)] + [TorchSide(module, state, "float64", PROJECTION, working)]
    assert sides[0].model() is sides[2].model()   # one copy, cast as each side needs
    masks = {"relu": [np.zeros((4, 4, 5, 5), np.float32)]}
    # whatever ran on the shared copy before (gradients, optimizer steps, BN statistics, masked ReLUs, casts) ...
    earlier = []
    for side in sides:
        earlier.append(_everything(side, x, loss_args))
        side.grads([x], loss_args, bn_train=False, masks=masks)
    # ... each side computes exactly what it computes on a copy of its own, and what it returned earlier (numpy
    # views of the copy's gradients among them) is still intact
    for side, before in zip(sides, earlier):
        got = _everything(side, x, loss_args)
        alone = _everything(TorchSide(module, side.state, "float64" if side.dtype == torch.float64 else "float32",
                                      PROJECTION), x, loss_args)
        assert got.keys() == alone.keys() == before.keys()
        for k in got:
            np.testing.assert_array_equal(got[k], alone[k], err_msg=k)
            np.testing.assert_array_equal(before[k], alone[k], err_msg=k)
    m = sides[0].model()
    assert m.relu.inplace and not any(mod._forward_hooks for mod in m.modules())   # masks undone
    # and the module the user passed is never touched
    for k, v in numpy_state(module).items():
        np.testing.assert_array_equal(v, state[k])
    with pytest.raises(ValueError, match="another module"):
        TorchSide(_Tiny(), state, "float32", PROJECTION, working)


def test_masks_change_the_gradients_only_while_they_are_forced(tiny):
    module, state, x, loss_args = tiny
    side = TorchSide(module, state, "float64", PROJECTION)
    plain = side.grads([x], loss_args, bn_train=True)
    masked = side.grads([x], loss_args, bn_train=True, masks={"relu": [np.zeros((4, 4, 5, 5), np.float32)]})
    assert np.all(masked["conv.weight"] == 0) and np.any(plain["conv.weight"] != 0)
    np.testing.assert_array_equal(side.grads([x], loss_args, bn_train=True)["conv.weight"], plain["conv.weight"])


def test_a_layer_error_is_added_once_however_often_its_side_computes(tiny):
    module, state, x, _ = tiny
    reference = TorchSide(module, state, "float64", PROJECTION)
    side = LayerErrorSide(reference, "conv", 1e-3, 0)
    first, again = side.eval_outputs([x])["output"], side.eval_outputs([x])["output"]
    np.testing.assert_array_equal(first, again)
    assert 0 < np.abs(first - reference.eval_outputs([x])["output"]).max() < 1e-2


class _Shared(torch.nn.Module):
    """A layer used twice (its gradient summed over both uses), a frozen one and an unused parameter."""

    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)
        self.fc = torch.nn.Linear(3, 3)
        self.unused = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(torch.relu(self.fc(self.frozen(x))))


@pytest.mark.parametrize("disk", ["file", "full disk"])
def test_gradients_written_as_backward_computes_them_are_the_gradients(tiny, monkeypatch, disk):
    """``gradients_to_file`` (each float64 gradient written to a temporary file and freed as soon as backward has it:
    VGG16's peak) gives every gradient ``grads`` gives, bit for bit, under the same names in the same order, masks
    kept, a parameter used twice summed over both uses, a frozen or unused one absent as before; nothing of it stays
    on the model; without a file the gradients stay in memory, the same."""
    from parity.engine import memory

    if disk == "full disk":
        monkeypatch.setattr(memory, "temporary_file", lambda: None)
    module, state, x, loss_args = tiny
    torch.manual_seed(1)
    shared = _Shared()
    xs = np.random.RandomState(3).standard_normal((4, 3)).astype(np.float32)
    cases = [(module, state, x, loss_args, None), (module, state, x, loss_args, {"relu": [(x[:, :1] > 0).repeat(
        4, 1).astype(np.float32)]}), (shared, numpy_state(shared), xs, projection_weights([(4, 3)], 0), None)]
    for mod, st, inp, args, masks in cases:
        side = TorchSide(mod, st, "float64", PROJECTION)
        plain = {k: v.copy() for k, v in side.grads([inp], args, bn_train=True, masks=masks).items()}
        with side.gradients_to_file():
            written = side.grads([inp], args, bn_train=True, masks=masks)
        back = written.load()
        assert list(back) == list(plain)
        for k in plain:
            np.testing.assert_array_equal(back[k], plain[k], err_msg=k)
        m = side.model()
        assert all(not p._post_accumulate_grad_hooks for p in m.parameters())   # hooks removed
        assert isinstance(side.grads([inp], args, bn_train=True), dict)       # and the mode left
    assert list(back) == ["fc.weight", "fc.bias"]


class _ReturnsItsWeight(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.w[:2], x * self.w   # the first output is a view of the parameter


def test_outputs_survive_the_next_computation_on_the_shared_copy():
    module = _ReturnsItsWeight()
    state = numpy_state(module)
    working = WorkingCopy(module)
    a, b = (TorchSide(module, JitteredState(state, seed, JITTER), "float32", PROJECTION, working) for seed in (1, 2))
    x = np.ones((2, 3), np.float32)
    first = a.eval_outputs([x])["output[0]"]
    b.eval_outputs([x])
    np.testing.assert_array_equal(first, dict(a.state.items())["w"][:2])


def _stored_synthetic_grads(params, steps, seed, generator="sfc64"):
    """The optimizer check's gradients, every step drawn whole at once (the definition the lazily drawn ones must
    keep): float32 normals from SFC64, or the float64 ``RandomState`` normals older reference bundles hold."""
    rms = {k: float(np.sqrt(np.mean(np.asarray(v, np.float64) ** 2))) or 1.0 for k, v in params.items()}
    if generator == "mt19937":
        rng = np.random.RandomState(seed + 3)
        return [{k: (0.1 * rms[k] * rng.standard_normal(np.shape(v))).astype(np.float32) for k, v in params.items()}
                for _ in range(steps)]
    rng = np.random.Generator(np.random.SFC64(seed + 3))
    return [{k: rng.standard_normal(np.shape(v), dtype=np.float32) * np.float32(0.1 * rms[k])
             for k, v in params.items()} for _ in range(steps)]


def test_synthetic_grads_of_the_two_generators_differ_and_an_unknown_one_is_refused(tiny):
    from parity.engine.comparison import synthetic_grads
    module, state, _, _ = tiny
    params = {k: v for k, v in state.items() if k in dict(module.named_parameters())}
    new, old = list(synthetic_grads(params, 1, 7))[0], list(synthetic_grads(params, 1, 7, "mt19937"))[0]
    assert all(new[k].dtype == old[k].dtype == np.float32 for k in params)
    assert not any(np.array_equal(new[k], old[k]) for k in params)
    with pytest.raises(ValueError, match="one of sfc64, mt19937"):
        synthetic_grads(params, 1, 7, "pcg64")


@pytest.mark.parametrize("generator", ["sfc64", "mt19937"])
def test_synthetic_grads_drawn_per_pass_are_the_stored_ones_and_the_updates_unchanged(tiny, monkeypatch, generator):
    """The optimizer check's gradients are not held (a VGG16's three steps were 1.5 GiB): the first use writes them
    to a file one tensor at a time, and every pass, every parameter's steps and every slice of them read back the
    stored numbers; the optimizer computes the same update step by step, parameter by parameter, or slice by slice."""
    from parity.engine import torch_side
    from parity.engine.comparison import synthetic_grads
    module, state, _, _ = tiny
    params = {k: v for k, v in state.items() if k in dict(module.named_parameters())}
    lazy, stored = synthetic_grads(params, 3, 7, generator), _stored_synthetic_grads(params, 3, 7, generator)
    assert len(lazy) == 3 and lazy.names == list(params)
    assert lazy._spill is None   # nothing drawn until used (a comparison without the optimizer check pays nothing)
    def assert_stored(steps):
        steps = list(steps)
        assert len(steps) == 3
        for got, want in zip(steps, stored):
            assert list(got) == list(want)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])

    early = iter(lazy)
    next(early)                  # a pass abandoned after one step: the file is whole all the same
    early.close()
    assert lazy._spill is not None
    outer = iter(lazy)
    first = next(outer)          # passes inside passes read the same file
    assert_stored(lazy)
    assert_stored([first, *outer])
    assert_stored(lazy)
    assert lazy.readable_per_tensor()   # and one parameter's steps on their own, as the torch optimizer reads them
    for k in params:
        got = list(lazy.steps_of(k))
        assert len(got) == 3
        for g, want in zip(got, stored):
            np.testing.assert_array_equal(g, want[k])
        n = want[k].size
        for start, stop in ((0, n // 2), (n // 2, n), (1, n + 5)):   # slices, one running past the end
            for g, want in zip(lazy.steps_of(k, start, stop), stored):
                np.testing.assert_array_equal(g, want[k].reshape(-1)[start:stop])
    for dtype in ("float32", "float64"):
        side = TorchSide(module, state, dtype, PROJECTION)
        b = side.optimizer_steps(stored, lr=0.1, momentum=0.9, weight_decay=1e-4)   # step by step
        # what neither path shares: one SGD over the module's own parameters, in the side's dtype
        model = copy.deepcopy(module).to(getattr(torch, dtype))
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        for step in stored:
            for k, p in model.named_parameters():
                p.grad = torch.from_numpy(step[k]).to(p.dtype)
            opt.step()
        for k, p in model.named_parameters():
            np.testing.assert_array_equal(b[k], (p.detach() - before[k]).numpy())
        for step_slice in (torch_side.STEP_SLICE, 7):   # parameter by parameter; then in slices of 7 elements
            monkeypatch.setattr(torch_side, "STEP_SLICE", step_slice)
            a = side.optimizer_steps(lazy, lr=0.1, momentum=0.9, weight_decay=1e-4)
            assert set(a) == set(params)
            for k in a:
                assert a[k].dtype == np.dtype(dtype) and a[k].shape == np.shape(params[k])
                np.testing.assert_array_equal(a[k], b[k])
        assert any(b[k].any() for k in b)   # the steps moved the weights


def test_synthetic_grads_draw_on_every_pass_when_the_disk_is_full(tiny, monkeypatch):
    """A disk that cannot take the steps' file costs time, not the check: every pass draws the same numbers."""
    import errno

    from parity.engine import comparison

    class FullDisk(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(comparison, "temporary_file", FullDisk)
    module, state, _, _ = tiny
    params = {k: v for k, v in state.items() if k in dict(module.named_parameters())}
    lazy, stored = comparison.synthetic_grads(params, 2, 3), _stored_synthetic_grads(params, 2, 3)
    for _ in range(2):
        for got, want in zip(lazy, stored, strict=True):
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    assert lazy._spill is None


def test_a_steps_file_cut_short_is_an_error_not_uninitialised_gradients(tiny):
    """Reading the optimizer check's gradients back checks every byte count: a file cut short under the check
    raises instead of handing ``np.empty`` leftovers to the optimizers."""
    from parity.engine.comparison import synthetic_grads
    module, state, _, _ = tiny
    params = {k: v for k, v in state.items() if k in dict(module.named_parameters())}
    lazy = synthetic_grads(params, 2, 7)
    list(lazy)                          # the first use writes the file
    lazy._spill.truncate(8)
    with pytest.raises(OSError, match="ended early"):
        list(lazy)
    with pytest.raises(OSError, match="ended early"):
        list(lazy.steps_of(list(params)[-1]))


def test_a_side_takes_arrays_of_any_layout_as_tensors_of_their_own(tiny):
    """A flipped (negative strides) or transposed input becomes a tensor of the side's dtype with its values; it
    never shares the caller's array (a module writing into its input must not change the inputs)."""
    module, state, x, _ = tiny
    for dtype in ("float32", "float64"):
        side = TorchSide(module, state, dtype, PROJECTION)
        for a in (x, x[:, ::-1], x.transpose(0, 1, 3, 2)):
            t = side.tensor(a)
            assert t.dtype == getattr(torch, dtype)
            np.testing.assert_array_equal(t.numpy(), a)
            assert not np.shares_memory(t.numpy(), a)


def test_a_model_loaded_with_share_is_its_arrays():
    """``load_numpy_state(share=True)`` (the parity suite's torch model): the model's tensors are the arrays
    themselves, with their values; without it, copies."""
    from torch_reference.models import load_numpy_state

    torch.manual_seed(0)
    module = _Tiny()
    state = {k: v + 1 if v.dtype.kind == "f" else v for k, v in numpy_state(module).items()}
    for share in (True, False):
        model = _Tiny()
        load_numpy_state(model, state, share=share)
        got = model.state_dict()
        for k, v in state.items():
            np.testing.assert_array_equal(got[k].numpy(), v)
            assert np.shares_memory(got[k].numpy(), v) == (share and v.dtype.kind == "f" or share and v.ndim == 0
                                                           and got[k].dtype == torch.int64)
