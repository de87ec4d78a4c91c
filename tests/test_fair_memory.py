"""Memory measured fairly: the CUDA peak counts the training steps above what is resident before training
(data splits, parameters), and ASGE's step saves only its conv / ReLU / goodness graph (its pooling and
LayerNorm hand-off runs without a graph, with the same values)."""

import torch

from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.training import backbones
from ffbench.training.train import SavedTensorMeter, TrainingPeak


def test_training_peak_is_above_the_resident_memory_and_excludes_evaluation():
    """By construction: a fake allocator with 700 bytes resident (data and parameters) before training."""
    state = {"now": 700, "max": 700}

    def alloc(n):
        state["now"] += n
        state["max"] = max(state["max"], state["now"])

    def reset():
        state["max"] = state["now"]

    peak = TrainingPeak(lambda: state["now"], lambda: state["max"], reset)
    assert peak.base == 700
    for epoch_steps, evaluation in ((300, 5000), (200, 5000)):
        peak.start()
        alloc(epoch_steps), alloc(-epoch_steps)  # activations of a step, freed after it
        peak.stop()
        alloc(evaluation), alloc(-evaluation)  # evaluation's larger batch is not counted
    assert peak.peak == 300
    peak.start()
    alloc(50)  # optimizer state kept from a step on: training memory
    peak.stop()
    assert peak.peak == 300 and state["now"] == 750


def asge(goodness="mean"):
    torch.manual_seed(0)
    b = backbones.build("vgg.asge", (1, 16, 16), 10, {"channels": [8, 16], "pool": [0]})
    card = METHODS.get("asge").card
    o = {**{k: v for k, v in card.defaults.items() if k in card.options}, "goodness": goodness}
    return METHODS.get("asge").obj(b, 10, o, Context(torch.device("cpu"), torch.Generator(), epochs=1))


def test_asge_step_saves_its_analytic_size():
    m = asge()
    B, K = 4, 10
    x, y = torch.randn(B, 1, 16, 16), torch.arange(B) % K
    for k, (c_in, c, hw) in enumerate([(1, 8, 16), (8, 16, 8)]):
        meter = SavedTensorMeter(list(m.parameters()))
        with meter.hooks():
            scores, _, x_next = m.forward_unit(k, x)
            m.unit_loss(k, scores, y, None)
        p = m.patches[k]
        # conv input, ReLU map (its square reuses it), the fixed projection (a buffer), log-softmax output,
        # int64 targets and the loss's total weight; nothing of the RMS pooling or the LayerNorm
        analytic = 4 * (B * c_in * 16 * 16 // (4**k) + B * c * hw * hw + K * c * p * p + B * K) + 8 * B + 4
        assert meter.peak == analytic, (k, meter.peak, analytic)
        if k == 0:  # the last unit hands nothing on
            assert x_next.grad_fn is None and not x_next.requires_grad
            with torch.no_grad():
                assert torch.equal(x_next, m.backbone.units[k](x))  # the hand-off's values are the block output's
        else:
            assert x_next is None
        x = x_next


def test_asge_numbers_do_not_depend_on_the_graph_change():
    """One training step from the same state gives the same parameters as the block's in-graph forward."""
    a, b = asge("sum"), asge("sum")
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8) % 10
    a.train_step(x, y)
    # b: the same step with the block output computed inside the graph (the former way)
    h = x
    for k, unit in enumerate(b.backbone.units):
        yk, out = unit.forward_pair(h)
        from ffbench.methods.asge import patch_goodness

        loss = b.unit_loss(k, b.heads[k](patch_goodness(yk, b.patches[k], "adaptive", "sum")), y, None)
        b.opts[k].zero_grad()
        loss.backward()
        b.opts[k].step()
        h = out.detach()
    for pa, pb in zip(a.backbone.parameters(), b.backbone.parameters()):
        assert torch.equal(pa, pb)
