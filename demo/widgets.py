"""Gradio controls for the module settings (`demo.settings.SettingField`)."""

from __future__ import annotations

import gradio as gr

from negguide.demo.settings import SettingField


def element_id(key: str) -> str:
    """The HTML id of a control, e.g. ``perpneg-view-azimuth`` for ``perpneg.view.azimuth``."""
    return key.replace(".", "-").replace("_", "-")


def setting_control(field: SettingField) -> gr.components.Component:
    """The control of one setting, created in the current Blocks context: a checkbox for a flag or an on/off
    switch, a drop-down for a string with a few accepted values, a text box for other strings, a slider for a
    number with bounds and a number box otherwise (left empty for ``None``)."""
    common = {"label": field.label, "info": field.info or None, "elem_id": element_id(field.key)}
    if field.kind is bool:
        return gr.Checkbox(value=field.default, **common)
    if field.choices:
        return gr.Dropdown(choices=list(field.choices), value=field.default, **common)
    if field.kind is str:
        return gr.Textbox(value=field.default, max_lines=1, **common)
    if field.bounds:
        minimum, maximum, step = field.bounds
        return gr.Slider(minimum, maximum, value=field.default, step=step, **common)
    return gr.Number(value=field.default, **common)


def parameter_name(key: str) -> str:
    """The API parameter of a control, e.g. ``perpneg_view_azimuth`` for ``perpneg.view.azimuth``."""
    return key.replace(".", "_")
