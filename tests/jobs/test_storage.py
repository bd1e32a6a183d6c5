"""Messages for failed storage operations: what happened decides what the user is told to check."""

from landslide_dask.jobs.storage import explain

URL = "s3://landslide-jobs/job"


def test_an_unreachable_endpoint_handed_over_as_a_permission_error_is_told_as_unreachable():
    # s3fs raised this for an endpoint where nothing listens (seen in the suite's S3 test)
    exc = PermissionError('Could not connect to the endpoint URL: "http://127.0.0.1:40353/landslide-jobs/job/x"')
    msg = explain(exc, URL, "writing to")
    assert "cannot be reached" in msg and "endpoint_url" in msg and "refused" not in msg


def test_a_refusal_is_told_as_a_refusal():
    msg = explain(PermissionError("Access Denied"), URL, "writing to")
    assert "was refused" in msg and "credentials" in msg and "cannot be reached" not in msg
