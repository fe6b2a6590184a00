"""Renderers for answers that are files: CSV for report endpoints (?format=csv) and the .vv
console file. Errors on those paths still answer SPEC §4's JSON envelope
(``FileErrorsAsJSONMixin``)."""

from __future__ import annotations

import csv
import io

from rest_framework.renderers import BaseRenderer, JSONRenderer

# A spreadsheet takes a cell that starts with one of these for a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """One value as a CSV cell a spreadsheet shows as written: nested data as text, and text
    that would start a formula behind a single quote. Numbers are left alone. Every CSV
    cell the API writes goes through here."""
    if isinstance(value, dict | list):
        value = str(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class FileRenderer(BaseRenderer):
    """A renderer whose body is a file rather than an API object."""

    charset = "utf-8"


class CSVRenderer(FileRenderer):
    """A list of flat objects (or one, or a paginated list), one row each."""

    media_type = "text/csv"
    format = "csv"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict) and "results" in data:  # a paginated list
            data = data["results"]
        if isinstance(data, dict):
            data = [data]
        if not data:
            return ""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(data[0]), extrasaction="ignore")
        writer.writeheader()
        for row in data:
            writer.writerow({name: csv_cell(cell) for name, cell in row.items()})
        return out.getvalue()


class VirtViewerRenderer(FileRenderer):
    """The .vv file remote-viewer opens: offered so that a client asking for that type
    (``Accept: application/x-virt-viewer``) is served; the view hands over the file."""

    media_type = "application/x-virt-viewer"
    format = "vv"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, str | bytes) else ""


class FileErrorsAsJSONMixin:
    """For views that offer files: errors still answer SPEC §4's JSON envelope."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 and isinstance(
                getattr(response, "accepted_renderer", None), FileRenderer):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response
