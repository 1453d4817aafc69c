#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into fuzz/corpus/<target>/.

Run from fuzz/: python3 seeds/make_seeds.py. The committed corpora are these seeds plus what
long runs found, minimised with `cargo fuzz cmin`. Targets built on `arbitrary` (encoders,
queue_segments) start from random bytes, which libFuzzer grows quickly.
"""
import hashlib
import os
import struct

def put(target, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# dogstatsd: flags byte, then packets separated by 0xFF.
lines = [
    b"page.views:1|c", b"page.views:2|c|@0.5|#env:prod,flag", b"temp:-1.5|g", b"temp:+3|g",
    b"users:alice|s", b"db.query:12.5|ms|@0.1|#db:main", b"resp:1:2:3|h", b"lat:0.25|d|#a:b,a:c",
    b"x:1|c|T1700000000", b"x:1|c|c:container123", b"_e{5,4}:title|text|#a:b|p:low|t:warning",
    b"_sc|check.name|1|#a:b|m:message", b"bad line", b"x:1e308|c", b"x:1|c|@1e-320",
    b"weird-name.with:chars:1|c|#Key With Space:v,__reserved:1,quantile:0.5,le:1,9x:y",
]
for l in lines:
    put("dogstatsd", b"\x00" + l)
put("dogstatsd", b"\x00" + b"\n".join(lines))
put("dogstatsd", b"\x02" + b"g:5|g\xffg:+2|g\xffg:-10|g")
put("dogstatsd", b"\x01" + b"a:1|c\na:2|c\xffa:3|c\na:4|")
put("dogstatsd", b"\x00" + b"x:1e308|c\xffx:1e308|c\xffx:1e308|c")

# gps_stream: mode, limits, piece count, pieces, stream.
def gps(mode, stream, pieces=(), small=0):
    put("gps_stream", bytes([mode, small, len(pieces)]) + bytes(pieces) + stream)

nmea = (b"$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68\r\n"
        b"$GPGGA,225446,4916.45,N,12311.12,W,1,08,0.9,545.4,M,46.9,M,,*4A\r\n\r\n")
gps(0, nmea, (5, 30, 1))
gps(1, b"$PGID,dev-1*1F\r\n" + nmea)
h02 = (b"*HQ,4970105243,V1,104000,A,2235.1777,N,11357.8913,E,000.27,235,130721,FFFFFBFF,460,11,d18e105,7752,6#"
       b"*HQ,4970105243,XT,1,100#*HQ,4970105243,V4,S20,OK,104000,130721#")
gps(0, h02, (9, 3))
gps(0, bytes.fromhex("24123456789000000101012433500000000703000000012090ffffffff000000"), (4,))
tk = (b"##,imei:359586015829802,A;359586015829802;"
      b"imei:864035050002451,tracker,201223064947,,F,064947,A,1935.70640,N,09859.94436,W,0.025,;"
      b"imei:359586015829802,tracker,2401011200,,L,,,1a2b,,3c4d,,,;")
gps(0, tk, (2, 17, 40))
gt06 = (bytes.fromhex("78 78 11 01 08 63 58 60 38 76 09 42 a0 01 00 00 01 0a a4 00 0d 0a")
        + bytes.fromhex("78 78 0a 13 c4 06 04 00 02 01 29 8f 5b 0d 0a"))
gps(0, gt06, (3, 1, 7))
gps(4, bytes.fromhex("79 79 00 0b 8a 15 07 0d 0a 28 05 00 2a 0d 0a"))

def crc16_arc(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc

def avl_record(i):
    r = struct.pack(">QBiihHBH", 1700000000000 + i * 1000, 0, 1139648550, 225862950, 50, 235, 9, 60)
    return r + bytes([0, 2, 1, 0xEF, 1, 0, 0, 0])  # event id, total IO, N1: id 239 = 1, N2, N4, N8

def teltonika(records):
    data = bytes([0x08, records]) + b"".join(avl_record(i) for i in range(records)) + bytes([records])
    return b"\x00\x00\x00\x00" + struct.pack(">I", len(data)) + data + struct.pack(">I", crc16_arc(data))

imei = b"\x00\x0f" + b"356307042441013"
gps(0, imei + teltonika(1) + b"\xff" + teltonika(2), (2, 6, 11))
gps(0, imei + teltonika(12), (17, 6, 2))
gps(5, imei + teltonika(1), (), 1)
# Issue 18: the new protocols and the frames real devices send (device captures quoted by
# Traccar's tests and the protocol documents).
gps(0, bytes.fromhex("787800691710231108500200cc080c4e2fa5640c4e2fa66e0d0a"
                     "7878121011091c0b1b2999058508040097a89e0034520d0a"
                     "78780c95130a071223200100013ad10d0a"), (5, 19, 2))
gps(4, bytes.fromhex("7979004a321106170c1b180cc900a875580b7ab4f00010350901fe0a007c0009112424007c0009122400"
                     "81004efe2100c500100f1200000000000000000000000000000000000000000000bc7c900d0a"))
gps(0, b"(027044702512BP05000027044702512240301A5130.0000N00007.5000W012.3120000090.0000000000L00000000)"
       b"(027044702512BP00HSO)(027044702512BO012240301A5130.0009N00007.5000W000.0120900000.0000000000L00000000)",
    (7, 30, 1))
gps(0, b"+RESP:GTFRI,020102,135790246811220,,0,0,1,1,4.3,92,70.0,121.354335,31.222073,20090214013254,"
       b"0460,0000,18d8,6141,00,,20090214093254,11F0$+ACK:GTHBD,060100,135790246811220,,20100214093254,11F0$",
    (11, 2))
gps(0, b"$$X138,862170010187175,AAA,35,-29.960365,-51.655455,130507201625,A,8,9,0,107,0.9,7,169322,"
       b"126582,724|6|0547|132B,0000,0009|000A||0278|0000,*BE\r\n", (3, 40))
gps(0, b"[SG*8800000015*0002*LK][SG*8800000015*0087*UD,220414,134652,A,22.571707,N,113.8613968,E,"
       b"0.1,0.0,100,7,60,90,1000,50,0000,4,1,460,0]", (6, 1))
gps(0, b"359769031878322imei:359769031878322,tracker,151027025958,,F,235957.000,A,2429.5156,N,"
       b"04424.5828,E,0.01,27.91,,0,0,,,;imei:868683027758113,OBD,180905200218,,,,0,0,;", (13,))
gps(0, bytes.fromhex("2435248308419329301047591808172627335900074412294E024138FEFFFFFFFF01120064BA73005ECC")
       + b"*HQ,1451316409,V1,030149,A,-23-29.0095,S,-46-51.5852,W,2.4,065,070315,FFFFFFFF#", (9, 33))
gps(0, b"660420156A0066AA$GPRMC,120000,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A\r\n"
       b"$GPGGA,120001.00,4916.4501,N,12311.1200,W,1,08,0.9,12.1,M,,M,,\r\n", (4, 21))

# otlp: flags byte (bit 0 = JSON), then the body.
otlp_json = b'''{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
"scopeMetrics":[{"metrics":[
{"name":"requests","sum":{"dataPoints":[{"asInt":"5","startTimeUnixNano":"1","timeUnixNano":"2","attributes":[{"key":"k","value":{"stringValue":"v"}}]}],"aggregationTemporality":2,"isMonotonic":true}},
{"name":"temp","gauge":{"dataPoints":[{"asDouble":21.5,"timeUnixNano":"2"}]}},
{"name":"lat","histogram":{"dataPoints":[{"count":"3","sum":6,"bucketCounts":["1","1","1"],"explicitBounds":[1,2],"timeUnixNano":"2"}],"aggregationTemporality":1}},
{"name":"exp","exponentialHistogram":{"dataPoints":[{"count":"2","sum":3,"scale":1,"zeroCount":"0","positive":{"offset":0,"bucketCounts":["1","1"]},"timeUnixNano":"2"}],"aggregationTemporality":1}},
{"name":"sum","summary":{"dataPoints":[{"count":"2","sum":3,"quantileValues":[{"quantile":0.5,"value":1}],"timeUnixNano":"2"}]}}
]}]}]}'''
put("otlp", b"\x01" + otlp_json)

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload

def msg(num, payload):
    return field(num, 2, payload)

# ExportMetricsServiceRequest{resource_metrics{scope_metrics{metrics{name, gauge{data_points{as_double}}}}}}
point = field(3, 1, struct.pack("<Q", 2)) + field(4, 1, struct.pack("<d", 21.5))
gauge_metric = msg(1, b"temp") + msg(5, msg(1, point))
sum_point = field(2, 1, struct.pack("<Q", 1)) + field(3, 1, struct.pack("<Q", 2)) + field(6, 1, struct.pack("<q", 5))
sum_metric = msg(1, b"requests") + msg(7, msg(1, sum_point) + field(2, 0, varint(2)) + field(3, 0, varint(1)))
put("otlp", b"\x00" + msg(1, msg(2, msg(2, gauge_metric) + msg(2, sum_metric))))

# config: optional environment block, ---, TOML.
with open("../config/tallyd.toml", "rb") as f:
    put("config", f.read())
put("config", b"[statsd]\nudp_listen = \"127.0.0.1:8125\"\nmax_tags = 10\n")
put("config", b"TALLYD_STATSD__MAX_TAGS=5\nDD_API_KEY=abc\n---\n[datadog]\nsite = \"datadoghq.eu\"\n")
put("config", b"[[alerts.rules]]\nname = \"x\"\nexpr = \"m > 1\"\n")
