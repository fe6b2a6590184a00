from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("vdi", "0003_pool_deletion_idempotency"),
    ]

    operations = [
        migrations.AddField(
            model_name="desktop",
            name="needs_reset",
            field=models.BooleanField(
                default=False,
                help_text="A floating desktop someone has used: it goes back to its image "
                          "before anyone else may have it.",
            ),
        ),
    ]
