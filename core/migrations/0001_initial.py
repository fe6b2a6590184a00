# The Idempotency-Key record moved here from the desktops app: its table (and rows) stay as
# they are, only Django's state changes hands (vdi.0006 lets go of it).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('vdi', '0005_printable_names_and_bounds'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='IdempotentRequest',
                    fields=[
                        ('id', models.BigAutoField(primary_key=True, serialize=False)),
                        ('key', models.CharField(max_length=255)),
                        ('fingerprint', models.CharField(help_text='SHA-256 of method, path and body.', max_length=64)),
                        ('status_code', models.PositiveSmallIntegerField(blank=True, help_text='Empty while the first is running.', null=True)),
                        ('response', models.JSONField(blank=True, null=True)),
                        ('headers', models.JSONField(blank=True, default=dict)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'vdi_idempotentrequest',
                        'indexes': [models.Index(fields=['created_at'], name='vdi_idempot_created_eb6ac9_idx')],
                        'constraints': [models.UniqueConstraint(fields=('user', 'key'), name='idempotency_user_key_uniq')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
