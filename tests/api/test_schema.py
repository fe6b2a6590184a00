from django.core.management import call_command


def test_openapi_schema_generates_without_warnings_and_validates(tmp_path, db):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(out))
    text = out.read_text()
    for path in ("/api/v1/tenants/{tenant_slug}/pools/{id}/connect/",
                 "/api/v1/tenants/{tenant_slug}/sessions/{id}/console.vv",
                 "/api/v1/tenants/{tenant_slug}/sessions/{id}/ticket/",
                 "/api/v1/auth/token/", "/api/v1/auth/tokens/", "/api/v1/auth/tokens/{id}/",
                 "/api/v1/hosts/", "/api/v1/images/"):
        assert path in text, path
    assert "knoxApiToken:" in text  # the Token scheme, for our subclass of knox's class


def test_schema_and_docs_are_served(client, db):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_api_docs_load_no_assets_from_a_cdn(client, db):
    html = client.get("/api/docs/").content.decode()
    assert "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/" in html
