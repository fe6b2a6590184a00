# The Idempotency-Key record moved to the core app (core.0001); the table stays.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('vdi', '0005_printable_names_and_bounds'),
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='IdempotentRequest')],
            database_operations=[],
        ),
    ]
