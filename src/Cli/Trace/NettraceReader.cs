using System.Buffers.Binary;
using System.Text;

namespace PagePool.Cli.Trace;

/// <summary>What a metadata record says about one kind of event.</summary>
internal sealed record EventMetadata(int Id, string Provider, int EventId, string Name, NettraceField[]? Fields);

/// <summary>A payload field: its System.TypeCode and name.</summary>
internal readonly record struct NettraceField(int TypeCode, string Name);

/// <summary>One event: its metadata, when it happened (seconds from the trace start) and its decoded payload.</summary>
internal sealed record NettraceEvent(EventMetadata Metadata, double Seconds, object?[]? Payload)
{
    /// <summary>The payload field of that name, or null.</summary>
    internal object? Field(string name)
    {
        var fields = Metadata.Fields;
        if (fields is null || Payload is null) return null;
        for (int i = 0; i < fields.Length && i < Payload.Length; i++)
            if (fields[i].Name == name) return Payload[i];
        return null;
    }
}

/// <summary>Thrown for a file that is not a NetTrace stream this reader understands.</summary>
internal sealed class NettraceFormatException(string message) : Exception(message);

/// <summary>
/// A reader for the NetTrace format EventPipe writes (versions 4 and 5: the FastSerialization object stream of
/// Trace, MetadataBlock, EventBlock, StackBlock and SPBlock objects, with compressed or plain event headers).
/// Enough to count events by name and decode flat payloads (numbers, strings); stacks are skipped. Written
/// from the format's public specification so the AOT tool needs no reflection-heavy trace library.
/// </summary>
internal sealed class NettraceReader
{
    private const byte NullReference = 1, BeginPrivateObject = 5, EndObject = 6;
    private const int TypeObject = 1, TypeString = 18;

    private readonly byte[] _data;
    private int _pos;
    private long _syncQpc, _qpcFrequency = 1;
    private readonly Dictionary<int, EventMetadata> _metadata = new();
    private readonly List<NettraceEvent> _events = new();

    private NettraceReader(byte[] data) => _data = data;

    /// <summary>The events of a .nettrace file, in file order.</summary>
    internal static List<NettraceEvent> Read(string path) => Read(File.ReadAllBytes(path));

    internal static List<NettraceEvent> Read(byte[] data)
    {
        var r = new NettraceReader(data);
        r.ReadStream();
        return r._events;
    }

    private void ReadStream()
    {
        if (_data.Length < 32 || Encoding.ASCII.GetString(_data, 0, 8) != "Nettrace")
            throw new NettraceFormatException("not a NetTrace file (no 'Nettrace' magic)");
        _pos = 8;
        if (ReadInt32() != 20 || Encoding.ASCII.GetString(_data, _pos, 20) != "!FastSerialization.1")
            throw new NettraceFormatException("unknown serialization header");
        _pos += 20;
        while (_pos < _data.Length)
        {
            byte tag = _data[_pos++];
            if (tag == NullReference) return; // end of stream
            Expect(tag, BeginPrivateObject);
            string type = ReadTypeName();
            switch (type)
            {
                case "Trace": ReadTrace(); break;
                case "MetadataBlock": ReadBlock(metadata: true); break;
                case "EventBlock": ReadBlock(metadata: false); break;
                default: SkipBlock(); break; // StackBlock, SPBlock
            }
            Expect(_data[_pos++], EndObject);
        }
    }

    private string ReadTypeName()
    {
        Expect(_data[_pos++], BeginPrivateObject);
        Expect(_data[_pos++], NullReference);
        _pos += 8; // version, minimum reader version
        int length = ReadInt32();
        string name = Encoding.UTF8.GetString(_data, _pos, length);
        _pos += length;
        Expect(_data[_pos++], EndObject);
        return name;
    }

    private void ReadTrace()
    {
        _pos += 16; // SYSTEMTIME of the sync point
        _syncQpc = ReadInt64();
        _qpcFrequency = Math.Max(1, ReadInt64());
        _pos += 16; // pointer size, process id, processors, sampling rate
    }

    private (int Start, int End) BlockBounds()
    {
        int size = ReadInt32();
        _pos = (_pos + 3) & ~3; // blocks are aligned to 4 bytes of file offset
        int start = _pos, end = start + size;
        if (end > _data.Length) throw new NettraceFormatException($"block at {start} runs past the end of the file");
        _pos = end;
        return (start, end);
    }

    private void SkipBlock() => BlockBounds();

    private void ReadBlock(bool metadata)
    {
        var (start, end) = BlockBounds();
        int p = start;
        int headerSize = BinaryPrimitives.ReadInt16LittleEndian(_data.AsSpan(p));
        bool compressed = (BinaryPrimitives.ReadInt16LittleEndian(_data.AsSpan(p + 2)) & 1) != 0;
        p += headerSize;

        // Compressed headers are deltas against the previous event of the block, which starts zeroed.
        int metadataId = 0, payloadSize = 0;
        long timestamp = 0;
        while (p < end)
        {
            if (compressed)
            {
                byte flags = _data[p++];
                if ((flags & 1) != 0) metadataId = (int)ReadVarUInt(ref p);
                if ((flags & 2) != 0) { ReadVarUInt(ref p); ReadVarUInt(ref p); ReadVarUInt(ref p); } // sequence, capture thread, processor
                if ((flags & 4) != 0) ReadVarUInt(ref p);   // thread id
                if ((flags & 8) != 0) ReadVarUInt(ref p);   // stack id
                timestamp += (long)ReadVarUInt(ref p);
                if ((flags & 16) != 0) p += 16;             // activity id
                if ((flags & 32) != 0) p += 16;             // related activity id
                if ((flags & 128) != 0) payloadSize = (int)ReadVarUInt(ref p);
            }
            else
            {
                p += 4;                                      // event size
                metadataId = BinaryPrimitives.ReadInt32LittleEndian(_data.AsSpan(p)) & 0x7FFFFFFF;
                p += 4 + 4 + 8 + 8 + 4 + 4;                  // id, sequence, thread, capture thread, processor, stack
                timestamp = BinaryPrimitives.ReadInt64LittleEndian(_data.AsSpan(p));
                p += 8 + 16 + 16;                            // timestamp, activity ids
                payloadSize = BinaryPrimitives.ReadInt32LittleEndian(_data.AsSpan(p));
                p += 4;
            }
            if (p + payloadSize > end) throw new NettraceFormatException($"event at {p} runs past its block");
            var payload = _data.AsSpan(p, payloadSize);
            if (metadata) ReadMetadata(payload);
            else if (_metadata.TryGetValue(metadataId, out var meta))
                _events.Add(new NettraceEvent(meta, (timestamp - _syncQpc) / (double)_qpcFrequency, Decode(meta, payload)));
            p += payloadSize;
            if (!compressed) p = (p + 3) & ~3;
        }
    }

    private void ReadMetadata(ReadOnlySpan<byte> m)
    {
        int q = 0;
        int id = BinaryPrimitives.ReadInt32LittleEndian(m);
        q += 4;
        string provider = ReadUtf16(m, ref q);
        int eventId = BinaryPrimitives.ReadInt32LittleEndian(m[q..]);
        q += 4;
        string name = ReadUtf16(m, ref q);
        q += 8 + 4 + 4; // keywords, version, level
        NettraceField[]? fields = null;
        if (q + 4 <= m.Length)
        {
            int count = BinaryPrimitives.ReadInt32LittleEndian(m[q..]);
            q += 4;
            var list = new List<NettraceField>(count);
            for (int i = 0; i < count && list is not null; i++)
            {
                int type = BinaryPrimitives.ReadInt32LittleEndian(m[q..]);
                q += 4;
                if (type == TypeObject) { list = null; break; } // nested structs: count the event, do not decode it
                list.Add(new NettraceField(type, ReadUtf16(m, ref q)));
            }
            fields = list?.ToArray();
        }
        if (name.Length == 0) name = $"Event{eventId}";
        _metadata[id] = new EventMetadata(id, provider, eventId, name, fields);
    }

    private static object?[]? Decode(EventMetadata meta, ReadOnlySpan<byte> p)
    {
        if (meta.Fields is null) return null;
        var values = new object?[meta.Fields.Length];
        int q = 0;
        for (int i = 0; i < values.Length; i++)
        {
            int type = meta.Fields[i].TypeCode;
            int size = type switch { 3 => 4, 4 => 2, 5 or 6 => 1, 7 or 8 => 2, 9 or 10 or 13 => 4, 11 or 12 or 14 or 16 => 8, 17 => 16, _ => -1 };
            if (type == TypeString) { values[i] = ReadUtf16(p, ref q); continue; }
            if (size < 0 || q + size > p.Length) return values; // a type this reader does not decode: stop here
            var s = p.Slice(q, size);
            values[i] = type switch
            {
                3 => BinaryPrimitives.ReadInt32LittleEndian(s) != 0,
                5 => (sbyte)s[0],
                6 => s[0],
                7 => BinaryPrimitives.ReadInt16LittleEndian(s),
                8 or 4 => BinaryPrimitives.ReadUInt16LittleEndian(s),
                9 => BinaryPrimitives.ReadInt32LittleEndian(s),
                10 => BinaryPrimitives.ReadUInt32LittleEndian(s),
                11 => BinaryPrimitives.ReadInt64LittleEndian(s),
                12 => BinaryPrimitives.ReadUInt64LittleEndian(s),
                13 => BinaryPrimitives.ReadSingleLittleEndian(s),
                14 => BinaryPrimitives.ReadDoubleLittleEndian(s),
                16 => BinaryPrimitives.ReadInt64LittleEndian(s),
                _ => new Guid(s),
            };
            q += size;
        }
        return values;
    }

    private static string ReadUtf16(ReadOnlySpan<byte> s, ref int q)
    {
        int start = q;
        while (q + 1 < s.Length && (s[q] | s[q + 1]) != 0) q += 2;
        string text = Encoding.Unicode.GetString(s[start..q]);
        q += 2;
        return text;
    }

    private ulong ReadVarUInt(ref int p)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            byte b = _data[p++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return value;
        }
        throw new NettraceFormatException($"variable-length integer at {p} is too long");
    }

    private int ReadInt32() { int v = BinaryPrimitives.ReadInt32LittleEndian(_data.AsSpan(_pos)); _pos += 4; return v; }
    private long ReadInt64() { long v = BinaryPrimitives.ReadInt64LittleEndian(_data.AsSpan(_pos)); _pos += 8; return v; }

    private void Expect(byte got, byte want)
    {
        if (got != want) throw new NettraceFormatException($"expected tag {want} at offset {_pos - 1}, found {got}");
    }
}
