"""Request and response shapes of the REST API (marshmallow; the OpenAPI document is built from them)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from portrait.templates import TAG_RE

from ..db.models import JOB_STATES
from ..kinds import PUBLIC_KINDS as JOB_KINDS


class Strict(Schema):
    class Meta:
        ordered = True


class ErrorDetail(Strict):
    code = fields.String(required=True, metadata={"description": "stable error code, e.g. not_found, "
                                                                 "unreadable, too_large, queue_full"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorBody(Strict):
    error = fields.Nested(ErrorDetail, required=True)


class Page(Strict):
    next_cursor = fields.String(allow_none=True, metadata={"description": "pass as ?cursor= for the next page; "
                                                                          "null on the last page"})


class ListArgs(Strict):
    class Meta:
        unknown = EXCLUDE

    cursor = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=None, validate=validate.Range(min=1, max=200))


# -- identities and photos --------------------------------------------------------------------------
class IdentityIn(Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class Photo(Strict):
    id = fields.String(required=True)
    identity_id = fields.String()
    filename = fields.String(metadata={"description": "the uploaded name, for display only (files are "
                                                      "stored under server-made names)"})
    accepted = fields.Boolean(allow_none=True, metadata={"description": "the verdict: at upload the intake "
                                                                        "check; after a job, its report's"})
    reasons = fields.List(fields.String(), metadata={"description": "stable reason codes (report.json's)"})
    message = fields.String(allow_none=True)
    reference = fields.Boolean(metadata={"description": "the reference photo chosen by preprocessing"})
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    format = fields.String(allow_none=True)
    bytes = fields.Integer(allow_none=True)
    created_at = fields.String(allow_none=True)


class PhotoList(Strict):
    photos = fields.List(fields.Nested(Photo), required=True)


class Identity(Strict):
    id = fields.String(required=True)
    name = fields.String(required=True)
    created_at = fields.String(allow_none=True)
    reference_photo_id = fields.String(allow_none=True)
    photos = fields.List(fields.Nested(Photo))


class IdentityPage(Page):
    items = fields.List(fields.Nested(Identity), required=True)


# -- jobs --------------------------------------------------------------------------------------------
class JobIn(Strict):
    kind = fields.String(load_default="run", validate=validate.OneOf(JOB_KINDS))
    identity_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    templates = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list,
                            validate=validate.Length(max=50))
    styles = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list,
                         validate=validate.Length(max=50),
                         metadata={"description": "style pack names, for kind create (GET /styles lists them)"})
    options = fields.Dict(keys=fields.String(), load_default=dict,
                          metadata={"description": "the job layer's config keys (e.g. variants, top_k); "
                                                   "an unknown key or bad value is a 400 naming it"})
    priority = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=-10, max=10))
    webhook_url = fields.URL(load_default=None, allow_none=True, schemes={"http", "https"},
                             metadata={"description": "POSTed the job when it ends (HMAC-SHA256 signed)"})


class Result(Strict):
    id = fields.String(required=True)
    url = fields.String(required=True, metadata={"description": "signed URL that expires; works without "
                                                                "an Authorization header"})
    score = fields.Float(allow_none=True, metadata={"description": "likeness 0..1 (1 = identical, 0.5 at "
                                                                   "the same-person threshold)"})
    template = fields.String(allow_none=True)
    distance = fields.Float(allow_none=True)
    rank = fields.Integer(allow_none=True)


class Job(Strict):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(JOB_STATES))
    stage = fields.String(allow_none=True)
    progress = fields.Float(required=True, metadata={"description": "0..1 across all stages; never goes back"})
    queue_position = fields.Integer(allow_none=True, metadata={"description": "jobs ahead of this one (0 = next to run); null "
                                                                              "once running or ended"})
    results = fields.List(fields.Nested(Result), required=True)
    error = fields.Nested(ErrorDetail, allow_none=True)
    identity_id = fields.String(allow_none=True)
    batch_id = fields.String(allow_none=True)
    templates = fields.List(fields.String())
    styles = fields.List(fields.String())
    options = fields.Dict()
    priority = fields.Integer()
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    cancel_requested = fields.Boolean()
    timings = fields.Dict(metadata={"description": "seconds per stage"})
    created_at = fields.String(allow_none=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)


class JobPage(Page):
    items = fields.List(fields.Nested(Job), required=True)


class JobListArgs(ListArgs):
    state = fields.String(load_default=None, validate=validate.OneOf(JOB_STATES))


class Report(Strict):
    class Meta:
        unknown = EXCLUDE

    photos = fields.List(fields.Dict(), required=True)
    selected = fields.List(fields.String())
    reference = fields.String(allow_none=True)


# -- templates ---------------------------------------------------------------------------------------
class TemplateInfo(Strict):
    name = fields.String(required=True)
    description = fields.String()
    thumbnail_url = fields.String(required=True)
    faces = fields.List(fields.Integer(), required=True)
    tags = fields.List(fields.String(), required=True,
                       metadata={"description": "framing, setting, colour or bw, view (and group for multi-face)"})
    source = fields.String(metadata={"description": "where the image came from"})
    licence = fields.String(metadata={"description": "its licence and the reason it may be used"})
    measured = fields.Dict(keys=fields.String(), metadata={
        "description": "skin_tone (Monk scale 1..10, 0 unknown), ita and yaw of the first replaced face"})


class TemplateArgs(Strict):
    tag = fields.List(fields.String(validate=validate.Regexp(TAG_RE)), load_default=list,
                      metadata={"description": "only templates with this tag (repeatable: all of them)"})


class StyleInfo(Strict):
    name = fields.String(required=True)
    description = fields.String()
    aspect = fields.String(metadata={"description": "width:height of the picture"})
    pose = fields.String(allow_none=True, metadata={"description": "the ControlNet its pose feeds (openpose, canny)"})
    tags = fields.List(fields.String(), required=True)
    source = fields.String(metadata={"description": "where its text and images came from"})
    licence = fields.String(metadata={"description": "their licence and the reason it may be used"})


# -- batches -----------------------------------------------------------------------------------------
class BatchRow(Strict):
    identity_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    kind = fields.String(load_default=None, validate=validate.OneOf(JOB_KINDS))
    templates = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list,
                            validate=validate.Length(max=50))
    styles = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list,
                         validate=validate.Length(max=50))
    options = fields.Dict(keys=fields.String(), load_default=dict)
    priority = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=-10, max=10))


class BatchIn(Strict):
    kind = fields.String(load_default="run", validate=validate.OneOf(JOB_KINDS),
                         metadata={"description": "each row's kind unless the row names one"})
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    rows = fields.List(fields.Nested(BatchRow), required=True, validate=validate.Length(min=1, max=500))
    webhook_url = fields.URL(load_default=None, allow_none=True, schemes={"http", "https"})


class BatchJob(Strict):
    id = fields.String(required=True)
    row = fields.Integer(required=True)
    identity_id = fields.String(allow_none=True)
    state = fields.String(required=True, validate=validate.OneOf(JOB_STATES))
    stage = fields.String(allow_none=True)
    progress = fields.Float(required=True)
    error = fields.Dict(allow_none=True)


class Batch(Strict):
    id = fields.String(required=True)
    name = fields.String(allow_none=True)
    created_at = fields.String(allow_none=True)
    progress = fields.Float(required=True, metadata={"description": "0..1 over all rows"})
    done = fields.Boolean(required=True, metadata={"description": "every row's job has ended"})
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "the summary: jobs by state"})
    jobs = fields.List(fields.Nested(BatchJob), required=True)


class ResultArgs(Strict):
    class Meta:
        unknown = EXCLUDE

    token = fields.String(load_default=None, validate=validate.Length(max=500),
                          metadata={"description": "the signature of a result's `url` (no header needed)"})
    download = fields.Boolean(load_default=False, metadata={"description": "send as an attachment"})


class TenantInfo(Strict):
    id = fields.String(required=True)
    name = fields.String(required=True)
    created_at = fields.String(allow_none=True)
    retention_days = fields.Float(metadata={"description": "photos, identities and results are deleted after this"})
    concurrency = fields.Integer(metadata={"description": "jobs of this tenant running at once"})
    webhook_url = fields.String(allow_none=True, metadata={"description": "POSTed every job of the tenant when it "
                                                                          "ends (unless the job names its own)"})
    webhook_secret = fields.String(metadata={"description": "key of the HMAC-SHA256 signature of each webhook "
                                                            "body (header X-Portrait-Signature)"})


class TenantPatch(Strict):
    webhook_url = fields.URL(required=True, allow_none=True, schemes={"http", "https"})
