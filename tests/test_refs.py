import pytest
from pydantic import BaseModel

from vlkd.errors import RefError
from vlkd.refs import ArtifactRef


def test_version_ref_parses_and_prints_back():
    ref = ArtifactRef.parse("teacher/howto100m-12l:v3")
    assert (ref.kind, ref.name, ref.version, ref.alias) == ("teacher", "howto100m-12l", 3, None)
    assert ref.pinned
    assert str(ref) == "teacher/howto100m-12l:v3"


def test_alias_ref_parses():
    ref = ArtifactRef.parse("student/wiki103:best")
    assert (ref.version, ref.alias, ref.pinned) == (None, "best", False)


def test_bare_ref_means_latest():
    assert str(ArtifactRef.parse("corpus/wiki103")) == "corpus/wiki103:latest"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("wiki103", "expected KIND/NAME"),
        ("model/x:v1", "unknown kind 'model'"),
        ("teacher/x:v0", "not the form vN"),
        ("teacher/-x", "expected KIND/NAME"),
        ("teacher/x:v1:v2", "expected KIND/NAME"),
        ("teacher/x y", "expected KIND/NAME"),
    ],
)
def test_malformed_refs_are_rejected_with_the_expected_form(text, fragment):
    with pytest.raises(RefError, match=fragment):
        ArtifactRef.parse(text)


def test_refs_are_strings_in_pydantic_models():
    class Holder(BaseModel):
        ref: ArtifactRef

    holder = Holder.model_validate({"ref": "features/a:v2"})
    assert holder.ref == ArtifactRef("features", "a", 2)
    assert holder.model_dump(mode="json") == {"ref": "features/a:v2"}
    assert Holder.model_json_schema()["properties"]["ref"]["type"] == "string"
