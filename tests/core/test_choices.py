"""Choices carry their labels and their UI tones; pages show labels and colour by tone."""

import pytest

from brokers.choices import SessionState
from core.choices import Tone, TonedChoices
from tenants.choices import AuditResult
from vdi.choices import DesktopState, OperationState

TONED = [DesktopState, OperationState, SessionState, AuditResult]


def test_every_toned_choices_class_is_listed_here():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert set(subclasses(TonedChoices)) == set(TONED)


@pytest.mark.parametrize("choices", TONED, ids=lambda c: c.__name__)
def test_tones_name_only_real_values_and_real_tones(choices):
    assert set(choices.TONES) <= set(choices.values), "a tone for a value that does not exist"
    assert set(choices.TONES.values()) <= set(Tone.values)
    for member in choices:
        assert member.tone in Tone.values
        assert member.label != member.value, f"{member!r} has no label of its own"


def test_a_model_reads_the_tone_of_the_value_it_holds(member_desktop):
    assert member_desktop.state_tone == DesktopState(member_desktop.state).tone
    member_desktop.state = DesktopState.ERROR
    assert member_desktop.state_tone == Tone.BAD
    member_desktop.state = DesktopState.RUNNING
    assert member_desktop.state_tone == Tone.GOOD


def test_the_dashboard_shows_the_label_coloured_by_its_tone(logged_in, member_desktop):
    html = logged_in("member").get("/t/acme/").content.decode()
    label = member_desktop.get_state_display()
    tone = member_desktop.state_tone
    assert f'class="state tone-{tone}" data-field="state"' in html
    assert f'data-announce="{member_desktop.name}">{label}</span>' in html
