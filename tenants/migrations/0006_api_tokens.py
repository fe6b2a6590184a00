"""API tokens get a name, a last use and a public id (tenants.ApiToken, one per knox token).
Tokens issued before keep working: each gets its record, named "API token", last used when
it was issued."""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def record_existing_tokens(apps, schema_editor):
    AuthToken = apps.get_model(settings.KNOX_TOKEN_MODEL)
    ApiToken = apps.get_model("tenants", "ApiToken")
    ApiToken.objects.bulk_create(
        ApiToken(token_id=digest, last_used_at=created)
        for digest, created in AuthToken.objects.values_list("digest", "created").iterator())


class Migration(migrations.Migration):

    dependencies = [
        ("knox", "0009_extend_authtoken_field"),  # the token table as it is now
        ("tenants", "0005_invitation_default_quotas"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True,
                                        serialize=False)),
                ("name", models.CharField(default="API token",
                                          help_text="The owner's label for the token.",
                                          max_length=100)),
                ("last_used_at", models.DateTimeField(
                    help_text="When the token last authenticated a request (to the minute), "
                              "or was issued.")),
                ("token", models.OneToOneField(
                    on_delete=django.db.models.deletion.CASCADE, related_name="info",
                    to=settings.KNOX_TOKEN_MODEL)),
            ],
            options={"verbose_name": "API token"},
        ),
        migrations.RunPython(record_existing_tokens, migrations.RunPython.noop),
    ]
