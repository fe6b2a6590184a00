"""Invitations to join an organisation, and new organisations' quotas from the platform's
defaults (VDI_DEFAULT_TENANT_MAX_*). Existing organisations keep the quotas they have."""

import functools
import uuid

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import tenants.models


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("tenants", "0004_tenant_name_printable"),
    ]

    operations = [
        *(
            migrations.AlterField(
                model_name="tenant",
                name=name,
                field=models.PositiveIntegerField(
                    blank=True, null=True,
                    default=functools.partial(tenants.models.default_quota, name),
                    validators=[django.core.validators.MaxValueValidator(2147483647)],
                    **({"help_text": "Concurrent sessions."} if name == "max_sessions" else {}),
                ),
            )
            for name in ("max_desktops", "max_vcpus", "max_memory_mb", "max_sessions")
        ),
        migrations.CreateModel(
            name="Invitation",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True,
                                        serialize=False)),
                ("role", models.CharField(choices=[("owner", "Owner"), ("admin", "Admin"),
                                                   ("member", "Member")],
                                          default="member", max_length=16)),
                ("username", models.CharField(
                    blank=True, max_length=150,
                    help_text="As the inviter gave it (an invitation by username).")),
                ("email", models.EmailField(
                    blank=True, max_length=254,
                    help_text="The address invited (an invitation by e-mail).")),
                ("token_hash", models.CharField(editable=False, max_length=64, unique=True)),
                ("state", models.CharField(choices=[("pending", "Pending"),
                                                    ("accepted", "Accepted"),
                                                    ("declined", "Declined"),
                                                    ("revoked", "Revoked")],
                                           default="pending", max_length=16)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("expires_at", models.DateTimeField()),
                ("accepted_at", models.DateTimeField(blank=True, null=True)),
                ("tenant", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             related_name="+", to="tenants.tenant")),
                ("user", models.ForeignKey(
                    blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+", to=settings.AUTH_USER_MODEL,
                    help_text="The account that may accept it; empty: none can (or, by "
                              "e-mail, the accounts with the address).")),
                ("inviter", models.ForeignKey(
                    blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+", to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "ordering": ["-created_at", "id"],
                "indexes": [models.Index(fields=["tenant", "state"],
                                         name="invitation_tenant_state_idx")],
                "constraints": [
                    models.UniqueConstraint(condition=models.Q(("state", "pending")),
                                            fields=("tenant", "user"),
                                            name="invitation_tenant_user_pending_uniq"),
                    models.CheckConstraint(
                        condition=models.Q(("email", ""), ("username", ""), _negated=True),
                        name="invitation_username_or_email"),
                ],
            },
        ),
    ]
