"""One registry behind models, gates and datasets: the same lookups and the same messages for each."""
import re

import pytest

import acs
from acs.data import build_loaders, dataset_info
from acs.gates import create_gate
from acs.registry import Registry


def test_register_get_list_and_options():
    registry = Registry("widget")

    @registry.register()
    def round_widget(size: int, colour: str = "red", shiny: bool = False):
        return size, colour, shiny

    registry.add("square", None)
    assert registry.names() == ["round_widget", "square"] and registry.names("r*") == ["round_widget"]
    assert "square" in registry and "oval" not in registry
    assert registry.get("round_widget") is round_widget
    assert registry.options("round_widget") == {"colour": "red", "shiny": False}  # positional sizes are no options
    assert registry.options("square") == {}
    registry.check_options("round_widget", ["shiny"])
    with pytest.raises(ValueError, match=re.escape("widget 'round_widget' is registered twice")):
        registry.add("round_widget", round_widget)
    with pytest.raises(ValueError, match=re.escape("unknown widget 'rund_widget' (did you mean round_widget?)")):
        registry.get("rund_widget")
    with pytest.raises(ValueError, match=r"^unknown widget 'hexagon'; available: round_widget, square$"):
        registry.get("hexagon")
    message = (
        "widget 'round_widget' has no option glow, size; its options: colour (default 'red'), shiny (default False)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.check_options("round_widget", ["size", "glow", "shiny"])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: acs.create_model("densenet41"), "unknown model 'densenet41' (did you mean densenet40, densenet41_acs"),
        (lambda: create_gate("acz", 8, 8), "unknown gate 'acz' (did you mean acs"),
        (lambda: dataset_info("cifar11"), "unknown dataset 'cifar11' (did you mean cifar10"),
        (lambda: acs.create_model("densenet40", width=4), "model 'densenet40' has no option width; its options: num_"),
        (lambda: create_gate({"name": "fbs", "width": 4}, 8, 8), "gate 'fbs' has no option width; its options: dens"),
        (lambda: build_loaders("digits", sise=8), "dataset 'digits' has no option sise; its options: image_size"),
    ],
)
def test_models_gates_and_datasets_speak_alike(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
