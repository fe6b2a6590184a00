"""Portal forms for the organisation's members. Presentation only: who may add whom, and the
last-owner rule, are decided by ``tenants.services``, whose errors the views put back here."""

from __future__ import annotations

from django import forms

from core.errors import InvalidInput

from .choices import Role


class MemberAddForm(forms.Form):
    who = forms.CharField(
        label="Username or e-mail address", max_length=254,
        help_text="Whom to invite: they become a member once they accept. By e-mail address, "
                  "a link is sent there (a new address gets an account, whose password the "
                  "link chooses).",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    role = forms.ChoiceField(label="Role", choices=Role.choices, initial=Role.MEMBER)

    def invite_arguments(self) -> dict:
        """``username=`` or ``email=`` for ``membership_invite``: an address has an @."""
        who = self.cleaned_data["who"].strip()
        return {"email": who} if "@" in who else {"username": who}

    def add_service_error(self, error: InvalidInput) -> None:
        """A refusal of ``membership_invite``: its field errors go next to the one field."""
        shown = False
        for name, messages in error.details.items():
            for message in messages if isinstance(messages, list) else [messages]:
                self.add_error("who" if name in ("username", "email") else
                               "role" if name == "role" else None, message)
                shown = True
        if not shown:
            self.add_error(None, error.message)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=Role.choices)
