"""``trainer.compile=true``: the training step of every gate design compiles into one graph, is not
recompiled while the masks change, and computes what the eager step computes (masks, MACs to the
last one, gradients to float rounding). Traced with the ``aot_eager`` backend, which runs dynamo and
the forward/backward split of ``torch.compile`` but no code generation, so it is fast on a CPU."""
import copy

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from acs.gates import FBSGate, keep_biases
from acs.models.densenet import DenseNet
from acs.training.objective import FlopsRegularizer, classification_loss

GATES = ["none", "acs", "ddi", "aig", "fbs", "static"]
STEPS = 20


def small_densenet(gate: str) -> DenseNet:
    """DenseNet-40's structure (3×3 convs, concatenation, transitions, a gate per layer), shrunk."""
    torch.manual_seed(0)
    spec = {"name": gate, "width": 8} if gate in ("acs", "ddi", "aig") else gate
    return DenseNet(growth_rate=4, block_layers=(2, 2), stem_channels=8, gate=spec).train()


def decision_biases(model):
    """The parameters that shift every gate's decisions: keep biases, and FBS's saliency biases."""
    return keep_biases(model) + [m.saliency.bias for m in model.modules() if isinstance(m, FBSGate)]


def step_loss(model, images, target, regularizer):
    """The forward half of the training loop's step (engine.run_epoch): loss plus the flops term."""
    out = model(images)
    loss, _ = classification_loss(out.logits, target)
    return out, loss + regularizer(out)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("gate", GATES)
def test_the_step_compiles_to_one_graph_matches_eager_and_is_not_recompiled_as_masks_change(gate):
    """``fullgraph=True``: a graph break (a host read, control flow on a value) is an error; one
    graph, as ``torch._dynamo.explain`` would count it, kept for the 20 steps."""
    eager = small_densenet(gate)
    compiled_model = copy.deepcopy(eager)
    compiled_step = torch.compile(step_loss, backend="aot_eager", fullgraph=True)
    regularizer = FlopsRegularizer(1.0, 50.0, eager.dense_macs((3, 8, 8)))
    optimizer = torch.optim.SGD(eager.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    masks_seen = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(STEPS):
            with torch.no_grad():  # new decisions at every step, whatever the gradients do
                for bias in decision_biases(eager):
                    bias.copy_(torch.randn(bias.shape, generator=generator))
            compiled_model.load_state_dict(eager.state_dict())  # in place: the same tensors
            images = torch.randn(4, 3, 8, 8, generator=generator)
            target = torch.randint(0, 10, (4,), generator=generator)
            results = []
            # Compiled first, as in training, where nothing eager has filled a cache before it.
            for net, run in ((compiled_model, compiled_step), (eager, step_loss)):
                net.zero_grad(set_to_none=True)
                torch.manual_seed(step)  # the same Gumbel noise (aig)
                out, loss = run(net, images, target, regularizer)
                loss.backward()
                results.append((out, loss))
            (out_c, loss_c), (out, loss) = results
            assert torch.equal(out_c.macs, out.macs), step
            assert len(out_c.masks) == len(out.masks)
            assert all(torch.equal(a, b) for a, b in zip(out_c.masks, out.masks)), step
            torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
            for (name, p), p_c in zip(eager.named_parameters(), compiled_model.parameters()):
                assert (p.grad is None) == (p_c.grad is None), name
                if p.grad is not None:
                    torch.testing.assert_close(p_c.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
            masks_seen.add(tuple(torch.cat([m.flatten() for m in out.masks]).tolist()) if out.masks else ())
            optimizer.step()
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert len(masks_seen) == (1 if gate == "none" else STEPS)  # the masks changed at every step
