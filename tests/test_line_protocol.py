"""NATS job events as cc-backend v1.5 parses them (cc-backend-contract.md §9.2, seed 002)."""

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.line_protocol import Line, LineProtocolError, decode_lines, encode_job_event

START = b'{"jobId":1001,"user":"testuser","cluster":"fritz","startTime":1234567890}'
STOP = b'{"jobId":1001,"cluster":"fritz","startTime":1234567890,"jobState":"completed","stopTime":1234569000}'


def test_a_start_is_one_line_with_sorted_tags_the_escaped_json_and_the_time_in_ns():
    line = encode_job_event("start_job", START, 1234567890, {"hostname": "ctl1"})

    assert line == (b'job,function=start_job,hostname=ctl1 event="{\\"jobId\\":1001,\\"user\\":\\"testuser\\",'
                    b'\\"cluster\\":\\"fritz\\",\\"startTime\\":1234567890}" 1234567890000000000\n')


def test_a_stop_carries_the_partition_tag_after_the_hostname():
    line = encode_job_event("stop_job", STOP, 1234569000, {"partition": "main", "hostname": "ctl1"})

    assert line.startswith(b'job,function=stop_job,hostname=ctl1,partition=main event="{\\"jobId\\":1001,')
    assert line.endswith(b'}" 1234569000000000000\n')


def test_an_empty_tag_value_is_left_out_because_the_server_refuses_it():
    line = encode_job_event("stop_job", STOP, 1, {"hostname": "ctl1", "partition": ""})

    assert line.startswith(b"job,function=stop_job,hostname=ctl1 event=")


def test_commas_equals_and_spaces_in_tags_are_escaped_and_read_back():
    line = encode_job_event("start_job", START, 1, {"hostname": "a b", "type": "node", "type-id": "0",
                                                    "x": "1,2=3"})

    assert line.startswith(b"job,function=start_job,hostname=a\\ b,type=node,type-id=0,x=1\\,2\\=3 event=")
    assert decode_lines(line)[0].tags == {"function": "start_job", "hostname": "a b", "type": "node",
                                          "type-id": "0", "x": "1,2=3"}


@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "ends\\", "\\,"])
def test_a_tag_value_the_server_cannot_read_back_is_left_out(bad):
    line = encode_job_event("stop_job", STOP, 1, {"hostname": "ctl1", "partition": bad})

    assert decode_lines(line)[0].tags == {"function": "stop_job", "hostname": "ctl1"}


def test_a_body_that_is_not_utf8_is_refused_before_it_is_sent():
    with pytest.raises(LineProtocolError):
        encode_job_event("start_job", b'{"x":"\xff"}', 1, {})


def test_the_seed_example_decodes_to_its_json():
    seed = (b'job,function=stop_job event="{\\"jobId\\":1001,\\"cluster\\":\\"fritz\\",\\"stopTime\\":1234569000,'
            b'\\"state\\":\\"completed\\"}" 1234569000000000000')

    [line] = decode_lines(seed)

    assert line == Line("job", {"function": "stop_job"}, {"event": '{"jobId":1001,"cluster":"fritz",'
                                                                   '"stopTime":1234569000,"state":"completed"}'},
                        1234569000000000000)


def test_a_job_script_with_json_escapes_survives_where_quote_only_escaping_loses_the_job():
    body = json.dumps({"jobId": 1, "startTime": 5, "metaData": {"jobScript": "#!/bin/bash\necho hi"}}).encode()

    ours = decode_lines(encode_job_event("start_job", body, 5, {}))[0].fields["event"]
    quote_only = decode_lines(b'job,function=start_job event="' + body.replace(b'"', b'\\"') + b'" 5')[0]

    assert ours.encode() == body
    with pytest.raises(ValueError):
        json.loads(quote_only.fields["event"])  # a raw newline inside a JSON string: cc-backend drops the job


def test_the_reader_follows_the_servers_string_escapes_and_keeps_other_backslashes():
    [line] = decode_lines(b'job,function=f s="a\\\\b\\"c\\nd\\re\\tf\\xg\nraw" 1')

    assert line.fields["s"] == 'a\\b"c\nd\re\tf\\xg\nraw'


def test_the_reader_reads_several_lines_and_skips_blank_and_comment_lines():
    lines = decode_lines(b'job,function=a event="x" 1\n\n# note\nnodestate n=3i,f=1.5 2\n')

    assert lines == [Line("job", {"function": "a"}, {"event": "x"}, 1),
                     Line("nodestate", {}, {"n": "3i", "f": "1.5"}, 2)]


@pytest.mark.parametrize("payload", [
    b'job,function= event="x" 1',  # empty tag value
    b'job,function=a event="x',  # unterminated string
    b'job,function=a event="x"',  # no timestamp
    b'job,function=a event="x" 1x',  # timestamp not an integer
    b"job 1",  # no field
    b'job,function=a b event="x" 1',  # unescaped space inside a tag value ends the tags
    b'job,function=a event="\xff" 1',  # invalid UTF-8
])
def test_the_reader_refuses_what_the_server_refuses(payload):
    with pytest.raises(LineProtocolError):
        decode_lines(payload)


# --- any JSON body round-trips -------------------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["\n", "\\", '"', "\\n", '\\"', '"\\', "a\r\nb", "\t", "€ 😀", '\\\\"', " = , "])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(value=json_values, host=text, ascii_only=st.booleans())
def test_any_json_body_round_trips_through_encode_and_decode(value, host, ascii_only):
    body = {"jobId": 1, "startTime": 1700000000, "metaData": {"jobScript": value}}
    raw = json.dumps(body, ensure_ascii=True).encode() if ascii_only else msgspec.json.encode(body)

    [line] = decode_lines(encode_job_event("start_job", raw, 1700000000, {"hostname": host, "partition": host}))

    assert line.fields == {"event": raw.decode()}
    assert json.loads(line.fields["event"]) == body
    assert line.tags["function"] == "start_job"
    assert set(line.tags) <= {"function", "hostname", "partition"}
    assert line.timestamp_ns == 1700000000 * 10**9
