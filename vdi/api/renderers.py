"""CSV for report endpoints (?format=csv): a list of flat objects, one row each."""

from __future__ import annotations

import csv
import io

from rest_framework.renderers import BaseRenderer, JSONRenderer


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

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
            writer.writerow({k: v if not isinstance(v, (dict, list)) else str(v)
                             for k, v in row.items()})
        return out.getvalue()


class CSVErrorsAsJSONMixin:
    """For views that offer CSV: errors still answer SPEC §4's JSON envelope."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 and isinstance(response.accepted_renderer, CSVRenderer):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response
