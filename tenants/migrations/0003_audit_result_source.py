"""Audit entries say how the mutation ended (result), through what (source) and in which
request or task (request_id); platform actions have no tenant. On PostgreSQL a trigger makes
the table append-only for everyone, raw SQL included."""

import django.core.serializers.json
import django.db.models.deletion
from django.db import migrations, models


# The one UPDATE allowed: deleting a user empties ``actor`` (ON DELETE SET NULL) and changes
# nothing else. TRUNCATE (test flushes, a deliberate purge) fires no row trigger.
APPEND_ONLY = """
CREATE FUNCTION tenants_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.actor_id IS NOT NULL AND NEW.actor_id IS NULL
            AND to_jsonb(NEW) - 'actor_id' = to_jsonb(OLD) - 'actor_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'tenants_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tenants_auditevent_append_only
    BEFORE UPDATE OR DELETE ON tenants_auditevent
    FOR EACH ROW EXECUTE FUNCTION tenants_auditevent_append_only();
"""
DROP_APPEND_ONLY = """
DROP TRIGGER IF EXISTS tenants_auditevent_append_only ON tenants_auditevent;
DROP FUNCTION IF EXISTS tenants_auditevent_append_only();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no %-interpolation of the SQL

    return run


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0002_audit_and_usage'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='actor_name',
            field=models.CharField(blank=True, help_text="The actor's username at the time.", max_length=150),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='request_id',
            field=models.CharField(blank=True, help_text="The request's X-Request-ID, or the task's id.", max_length=64),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='result',
            field=models.CharField(choices=[('ok', 'OK'), ('denied', 'Denied'), ('rejected', 'Rejected'), ('failed', 'Failed')], default='ok', max_length=8),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='source',
            field=models.CharField(choices=[('api', 'REST API'), ('portal', 'Portal'), ('admin', 'Django admin'), ('task', 'Background task'), ('system', 'System')], default='system', max_length=8),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='details',
            field=models.JSONField(blank=True, default=dict, encoder=django.core.serializers.json.DjangoJSONEncoder),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='object_id',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='tenant',
            field=models.ForeignKey(blank=True, help_text='Empty for platform actions.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
        migrations.RunPython(_on_postgresql(APPEND_ONLY), _on_postgresql(DROP_APPEND_ONLY)),
    ]
