from drf_spectacular.generators import SchemaGenerator

from tenants.scoping import scopes_disabled


class ScopeFreeSchemaGenerator(SchemaGenerator):
    """Schema generation inspects every model's manager (never its rows), across tenants."""

    def get_schema(self, *args, **kwargs):
        with scopes_disabled():
            return super().get_schema(*args, **kwargs)
