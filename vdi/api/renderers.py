"""CSV for report endpoints (?format=csv): a list of flat objects, one row each."""

from __future__ import annotations

import csv
import io

from rest_framework.renderers import BaseRenderer


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
        if "error" in data[0]:  # an error envelope: code and message, as CSV
            error = data[0]["error"]
            data = [{"error": error.get("code", ""), "message": error.get("message", "")}]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(data[0]), extrasaction="ignore")
        writer.writeheader()
        for row in data:
            writer.writerow({k: v if not isinstance(v, (dict, list)) else str(v)
                             for k, v in row.items()})
        return out.getvalue()
