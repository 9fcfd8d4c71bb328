"""MQTT 5.0 scenarios run by tests/paho.rs with the paho-mqtt 2.x client.

Usage: python3 paho_v5.py PORT SCENARIO. Exits 0 and prints "ok" on success;
any failed check raises (non-zero exit with a traceback).
"""

import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
TIMEOUT = 10


class Peer:
    """A connected paho client whose messages land in a queue."""

    def __init__(self, client_id, clean_start=True, **connect_props):
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.acks.put((mid, codes))
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        props = None
        if connect_props:
            props = Properties(PacketTypes.CONNECT)
            for name, value in connect_props.items():
                setattr(props, name, value)
        self.client.connect(
            "127.0.0.1", PORT, keepalive=30, clean_start=clean_start, properties=props
        )
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def subscribe(self, topic, **options):
        _, mid = self.client.subscribe(topic, options=SubscribeOptions(**options))
        got_mid, codes = self.acks.get(timeout=TIMEOUT)
        assert got_mid == mid
        assert all(not c.is_failure for c in codes), codes
        return codes

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(TIMEOUT)

    def next(self):
        return self.messages.get(timeout=TIMEOUT)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def no_local():
    me = Peer("paho-nl")
    me.subscribe("nl", qos=1, noLocal=True)
    me.publish("nl", b"mine")
    other = Peer("paho-nl-other")
    other.publish("nl", b"theirs")
    assert me.next().payload == b"theirs"
    me.close()
    other.close()


def retain_handling():
    p = Peer("paho-rh-pub")
    p.publish("rh/t", b"kept", retain=True)
    s = Peer("paho-rh")
    s.subscribe("rh/#", qos=1, retainHandling=2)
    s.subscribe("rh-marker", qos=1)
    p.publish("rh-marker", b"m")
    assert s.next().payload == b"m"
    s.subscribe("rh/#", qos=1, retainHandling=1)  # exists already: nothing
    s.subscribe("rh/+", qos=1, retainHandling=1)  # new: retained sent
    m = s.next()
    assert (m.topic, m.payload, m.retain) == ("rh/t", b"kept", True)
    s.subscribe("rh/#", qos=1, retainHandling=0)
    m = s.next()
    assert (m.payload, m.retain) == (b"kept", True)
    p.publish("rh/t", b"", retain=True)
    s.close()
    p.close()


def shared():
    workers = [Peer("paho-w%d" % i) for i in range(2)]
    for w in workers:
        w.subscribe("$share/grp/jobs/#", qos=1)
    p = Peer("paho-boss")
    for i in range(6):
        p.publish("jobs/%d" % i, b"job %d" % i)
    # Each job to one worker; which one is the broker's choice (fulmar: the
    # least busy member), so the split is not fixed.
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 6 and time.monotonic() < deadline:
        for w in workers:
            try:
                got.append(w.messages.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    assert sorted(got) == sorted(b"job %d" % i for i in range(6)), got
    # And no copy more: a message after them reaches one worker only, first.
    p.publish("jobs/end", b"end")
    ends = []
    deadline = time.monotonic() + TIMEOUT
    while not ends and time.monotonic() < deadline:
        for w in workers:
            try:
                ends.append(w.messages.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    assert ends == [b"end"], ends
    for w in workers:
        assert w.messages.empty()
        w.close()
    p.close()


def request_response():
    s = Peer("paho-rr-sub")
    s.subscribe("rr/req", qos=1)
    p = Peer("paho-rr-pub")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "rr/resp/1"
    props.CorrelationData = b"\x00\x2a"
    props.ContentType = "text/plain"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 3600
    props.UserProperty = [("b", "1"), ("a", "2"), ("b", "3")]
    p.publish("rr/req", b"ping", props=props)
    m = s.next()
    got = m.properties
    assert got.ResponseTopic == "rr/resp/1"
    assert got.CorrelationData == b"\x00\x2a"
    assert got.ContentType == "text/plain"
    assert got.PayloadFormatIndicator == 1
    assert 3590 <= got.MessageExpiryInterval <= 3600
    assert got.UserProperty == [("b", "1"), ("a", "2"), ("b", "3")], got.UserProperty
    s.close()
    p.close()


def topic_alias():
    s = Peer("paho-ta-sub", TopicAliasMaximum=4)
    s.subscribe("ta/#", qos=1)
    p = Peer("paho-ta-pub")
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = 1
    p.publish("ta/a/long/topic", b"1", props=props)
    p.publish("", b"2", props=props)
    first, second = s.next(), s.next()
    # The broker resolved the publisher's alias and uses its own towards
    # the subscriber (at most the maximum it announced).
    assert (first.topic, first.payload) == ("ta/a/long/topic", b"1")
    assert 1 <= first.properties.TopicAlias <= 4
    assert (second.topic, second.payload) == ("", b"2"), (second.topic, second.payload)
    assert second.properties.TopicAlias == first.properties.TopicAlias
    s.close()
    p.close()


def message_expiry():
    s = Peer("paho-mx", SessionExpiryInterval=60)
    s.subscribe("mx", qos=1)
    s.close()
    p = Peer("paho-mx-pub")
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 1
    p.publish("mx", b"stale", props=props)
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 600
    p.publish("mx", b"fresh", props=props)
    threading.Event().wait(1.2)
    s = Peer("paho-mx", clean_start=False, SessionExpiryInterval=60)
    m = s.next()
    assert m.payload == b"fresh", m.payload
    assert m.properties.MessageExpiryInterval < 600
    s.close()
    p.close()


SCENARIOS = {
    "no_local": no_local,
    "retain_handling": retain_handling,
    "shared": shared,
    "request_response": request_response,
    "topic_alias": topic_alias,
    "message_expiry": message_expiry,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[2]]()
    print("ok")
