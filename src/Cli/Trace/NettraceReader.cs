using System.Buffers.Binary;
using System.Text;

namespace PagePool.Cli.Trace;

/// <summary>
/// A reader for the NetTrace format EventPipe writes (versions 4 and 5: the FastSerialization object stream of
/// Trace, MetadataBlock, EventBlock, StackBlock and SPBlock objects, with compressed or plain event headers).
/// Enough to count events by name and decode flat payloads (numbers, strings); stacks are skipped. Written
/// from the format's public specification so the AOT tool needs no reflection-heavy trace library.
/// </summary>
/// <remarks>
/// Any file, any size, in bounded memory and time: the file is streamed (one block in memory at a time, at most
/// <see cref="MaxBlockBytes"/>), every length read from the file is checked against what remains of its block
/// before anything is allocated or skipped, every loop consumes at least one byte, and the metadata the reader
/// keeps is capped (<see cref="MaxMetadataRecords"/> records of <see cref="MaxMetadataBytes"/> in all).
/// Damage raises <see cref="DamagedNettraceException"/>, a file that is no trace at all
/// <see cref="NotANettraceException"/>, both with the byte offset where reading stopped. Events read before the
/// damage have already been delivered.
/// </remarks>
internal sealed class NettraceReader
{
    /// <summary>
    /// The largest block accepted. EventPipe flushes a block at about 100 KB of events; anything over 16 MiB is
    /// a corrupt size field, and this bounds the reader's memory.
    /// </summary>
    internal const int MaxBlockBytes = 16 << 20;
    /// <summary>Distinct event kinds a trace may define: a real one defines a few hundred.</summary>
    internal const int MaxMetadataRecords = 1 << 16;
    /// <summary>Longest provider, event or field name kept, in UTF-16 characters.</summary>
    internal const int MaxNameChars = 1024;
    /// <summary>Most payload fields one event kind may declare.</summary>
    internal const int MaxFields = 1024;
    /// <summary>Bytes of metadata records a trace may hold in all: a real one holds tens of KB.</summary>
    internal const int MaxMetadataBytes = 16 << 20;

    private const byte NullReference = 1, BeginPrivateObject = 5, EndObject = 6;
    private const int TypeObject = 1, TypeString = 18;
    private const int MaxTypeNameBytes = 256;
    private const int TraceObjectBytes = 48; // SYSTEMTIME, sync QPC, QPC frequency, pointer size, pid, processors, sampling rate
    private const string Magic = "Nettrace", SerializationHeader = "!FastSerialization.1";

    private readonly Stream _stream;
    private readonly Action<NettraceEvent> _onEvent;
    private readonly Dictionary<int, EventMetadata> _metadata = new();
    private readonly byte[] _small = new byte[TraceObjectBytes];
    private byte[] _block = new byte[64 << 10]; // grows to the largest block seen, at most MaxBlockBytes
    private long _offset;                       // file offset of the next byte the stream gives
    private long _syncQpc, _qpcFrequency = 1;
    private long _metadataBytes;

    private NettraceReader(Stream stream, Action<NettraceEvent> onEvent)
    {
        _stream = stream;
        _onEvent = onEvent;
    }

    /// <summary>Stream the events of a .nettrace file to <paramref name="onEvent"/>, in file order.</summary>
    /// <exception cref="NotANettraceException">The file is not a NetTrace stream.</exception>
    /// <exception cref="DamagedNettraceException">The stream is cut short or corrupt; events before that were delivered.</exception>
    internal static void Read(string path, Action<NettraceEvent> onEvent)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
        Read(file, onEvent);
    }

    /// <summary>Stream the events of a NetTrace stream to <paramref name="onEvent"/>, in order.</summary>
    internal static void Read(Stream stream, Action<NettraceEvent> onEvent) => new NettraceReader(stream, onEvent).ReadStream();

    /// <summary>Every event of a file, in a list: for small files (tests); <see cref="Read(string, Action{NettraceEvent})"/> streams.</summary>
    internal static List<NettraceEvent> ReadAll(string path)
    {
        var events = new List<NettraceEvent>();
        Read(path, events.Add);
        return events;
    }

    private void ReadStream()
    {
        if (!TryFill(_small.AsSpan(0, Magic.Length)) || Encoding.ASCII.GetString(_small, 0, Magic.Length) != Magic)
            throw new NotANettraceException("not a NetTrace file (no 'Nettrace' magic)", 0);
        long header = _offset;
        if (!TryFill(_small.AsSpan(0, 4)) || BinaryPrimitives.ReadInt32LittleEndian(_small) != SerializationHeader.Length
            || !TryFill(_small.AsSpan(0, SerializationHeader.Length))
            || Encoding.ASCII.GetString(_small, 0, SerializationHeader.Length) != SerializationHeader)
            throw new NotANettraceException("not a NetTrace file (unknown serialization header)", header);

        // Each object costs at least its tags: the loop ends at the end-of-stream tag or the end of the file.
        while (true)
        {
            long at = _offset;
            int tag = ReadByte("an object tag");
            if (tag == NullReference) return; // end of stream
            Expect(tag, BeginPrivateObject, at);
            string type = ReadTypeName();
            switch (type)
            {
                case "Trace": ReadTrace(); break;
                case "MetadataBlock": ReadBlock(metadata: true); break;
                case "EventBlock": ReadBlock(metadata: false); break;
                default: SkipBlock(); break; // StackBlock, SPBlock: size-prefixed like the others
            }
            at = _offset;
            Expect(ReadByte("the end of an object"), EndObject, at);
        }
    }

    private string ReadTypeName()
    {
        long at = _offset;
        Expect(ReadByte("a type tag"), BeginPrivateObject, at);
        at = _offset;
        Expect(ReadByte("a type tag"), NullReference, at);
        Fill(_small.AsSpan(0, 12), "a type header"); // version, minimum reader version, name length
        int length = BinaryPrimitives.ReadInt32LittleEndian(_small.AsSpan(8));
        if (length <= 0 || length > MaxTypeNameBytes)
            throw new DamagedNettraceException($"type name length {length} is outside 1..{MaxTypeNameBytes}", _offset - 4);
        Span<byte> name = stackalloc byte[length];
        Fill(name, "a type name");
        at = _offset;
        Expect(ReadByte("the end of a type"), EndObject, at);
        return Encoding.UTF8.GetString(name);
    }

    private void ReadTrace()
    {
        Fill(_small.AsSpan(0, TraceObjectBytes), "the trace header");
        _syncQpc = BinaryPrimitives.ReadInt64LittleEndian(_small.AsSpan(16));
        _qpcFrequency = Math.Max(1, BinaryPrimitives.ReadInt64LittleEndian(_small.AsSpan(24)));
    }

    // A block: its size, padding to 4 bytes of file offset, then the content. Returns the content's size.
    private int BlockSize()
    {
        long at = _offset;
        Fill(_small.AsSpan(0, 4), "a block size");
        int size = BinaryPrimitives.ReadInt32LittleEndian(_small);
        if (size < 0 || size > MaxBlockBytes)
            throw new DamagedNettraceException($"block size {size} is outside 0..{MaxBlockBytes}", at);
        int padding = (int)((4 - (_offset & 3)) & 3);
        if (padding != 0) Fill(_small.AsSpan(0, padding), "a block's padding");
        if (_stream.CanSeek && size > _stream.Length - _stream.Position)
            throw new DamagedNettraceException($"a block of {size:N0} bytes runs past the end of the file ({_stream.Length - _stream.Position:N0} left)", at);
        return size;
    }

    private void SkipBlock()
    {
        int size = BlockSize();
        if (_stream.CanSeek) // BlockSize checked that the file holds it
        {
            _stream.Seek(size, SeekOrigin.Current);
            _offset += size;
            return;
        }
        while (size > 0)
        {
            int n = Math.Min(size, _block.Length);
            Fill(_block.AsSpan(0, n), "a block");
            size -= n;
        }
    }

    private void ReadBlock(bool metadata)
    {
        int size = BlockSize();
        if (size > _block.Length) _block = new byte[Math.Min(MaxBlockBytes, Math.Max(size, _block.Length * 2))];
        long start = _offset;
        Fill(_block.AsSpan(0, size), "a block");
        var c = new BlockCursor(_block.AsSpan(0, size), start);

        int headerSize = c.Int16();
        bool compressed = (c.Int16() & 1) != 0;
        if (headerSize < 4) throw c.Damaged($"block header size {headerSize} is below 4");
        c.Skip(headerSize - 4);

        // Compressed headers are deltas against the previous event of the block, which starts zeroed.
        int metadataId = 0, payloadSize = 0;
        long timestamp = 0;
        while (!c.AtEnd) // every pass consumes at least a flags byte and a timestamp
        {
            if (compressed)
            {
                byte flags = c.Byte();
                if ((flags & 1) != 0) metadataId = c.VarInt32("metadata id");
                if ((flags & 2) != 0) { c.VarUInt(); c.VarUInt(); c.VarUInt(); } // sequence, capture thread, processor
                if ((flags & 4) != 0) c.VarUInt();   // thread id
                if ((flags & 8) != 0) c.VarUInt();   // stack id
                timestamp += (long)c.VarUInt();
                if ((flags & 16) != 0) c.Skip(16);   // activity id
                if ((flags & 32) != 0) c.Skip(16);   // related activity id
                if ((flags & 128) != 0) payloadSize = c.VarInt32("payload size");
            }
            else
            {
                c.Skip(4);                           // event size
                metadataId = c.Int32() & 0x7FFFFFFF;
                c.Skip(4 + 8 + 8 + 4 + 4);           // sequence, thread, capture thread, processor, stack
                timestamp = c.Int64();
                c.Skip(16 + 16);                     // activity ids
                payloadSize = c.Int32();
                if (payloadSize < 0) throw c.Damaged($"payload size {payloadSize} is negative");
            }
            long payloadAt = c.Offset;
            var payload = c.Take(payloadSize, "an event payload");
            if (metadata) ReadMetadata(payload, payloadAt);
            else if (_metadata.TryGetValue(metadataId, out var meta))
                _onEvent(new NettraceEvent(meta, (timestamp - _syncQpc) / (double)_qpcFrequency, Decode(meta, payload)));
            if (!compressed) c.AlignTo4();
        }
    }

    private void ReadMetadata(ReadOnlySpan<byte> m, long at)
    {
        // What is kept of a record is at most its own size: capping their sum bounds the reader's memory.
        if ((_metadataBytes += m.Length) > MaxMetadataBytes)
            throw new DamagedNettraceException($"more than {MaxMetadataBytes >> 20} MiB of event metadata", at);
        var c = new BlockCursor(m, at);
        int id = c.Int32();
        string provider = c.Utf16z(MaxNameChars, "a provider name");
        int eventId = c.Int32();
        string name = c.Utf16z(MaxNameChars, "an event name");
        NettraceField[]? fields = null;
        if (c.Remaining >= 16 + 4)
        {
            c.Skip(8 + 4 + 4); // keywords, version, level
            int count = c.Int32();
            if (count < 0 || count > MaxFields) throw c.Damaged($"field count {count} is outside 0..{MaxFields}");
            var list = new List<NettraceField>(Math.Min(count, 16));
            for (int i = 0; i < count; i++)
            {
                int type = c.Int32();
                if (type == TypeObject) { list = null; break; } // nested structs: count the event, do not decode it
                list.Add(new NettraceField(type, c.Utf16z(MaxNameChars, "a field name")));
            }
            fields = list?.ToArray();
        }
        if (name.Length == 0) name = $"Event{eventId}";
        if (_metadata.Count >= MaxMetadataRecords && !_metadata.ContainsKey(id))
            throw new DamagedNettraceException($"more than {MaxMetadataRecords} event kinds defined", at);
        _metadata[id] = new EventMetadata(id, provider, eventId, name, fields);
    }

    // Flat payloads only: a field this reader does not decode, or a payload cut short, ends the decoding there.
    private static object?[]? Decode(EventMetadata meta, ReadOnlySpan<byte> p)
    {
        if (meta.Fields is null) return null;
        var values = new object?[meta.Fields.Length];
        int q = 0;
        for (int i = 0; i < values.Length; i++)
        {
            int type = meta.Fields[i].TypeCode;
            if (type == TypeString) { values[i] = Utf16z(p, ref q); continue; }
            int size = type switch { 3 => 4, 4 => 2, 5 or 6 => 1, 7 or 8 => 2, 9 or 10 or 13 => 4, 11 or 12 or 14 or 16 => 8, 17 => 16, _ => -1 };
            if (size < 0 || size > p.Length - q) return values;
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

    // A NUL-terminated UTF-16 string of a payload; an unterminated one runs to the payload's end.
    private static string Utf16z(ReadOnlySpan<byte> s, ref int q)
    {
        int start = Math.Min(q, s.Length), end = start;
        while (end + 1 < s.Length && (s[end] | s[end + 1]) != 0) end += 2;
        q = end + 2;
        return Encoding.Unicode.GetString(s[start..end]);
    }

    private int ReadByte(string what)
    {
        int b = _stream.ReadByte();
        if (b < 0) throw new DamagedNettraceException($"the file ends where {what} should be", _offset);
        _offset++;
        return b;
    }

    // Read exactly dst.Length bytes; false when the file ends first.
    private bool TryFill(Span<byte> dst)
    {
        while (!dst.IsEmpty)
        {
            int n = _stream.Read(dst);
            if (n <= 0) return false;
            _offset += n;
            dst = dst[n..];
        }
        return true;
    }

    private void Fill(Span<byte> dst, string what)
    {
        if (!TryFill(dst)) throw new DamagedNettraceException($"the file ends in the middle of {what}", _offset);
    }

    private static void Expect(int got, byte want, long at)
    {
        if (got != want) throw new DamagedNettraceException($"expected tag {want}, found {got}", at);
    }

    /// <summary>Bounds-checked reads over one block (or one payload) held in memory, at a known file offset.</summary>
    private ref struct BlockCursor(ReadOnlySpan<byte> data, long fileOffset)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private readonly long _fileOffset = fileOffset;
        private int _pos;

        internal readonly bool AtEnd => _pos >= _data.Length;
        internal readonly int Remaining => _data.Length - _pos;
        internal readonly long Offset => _fileOffset + _pos;

        internal readonly DamagedNettraceException Damaged(string what) => new(what, Offset);

        private ReadOnlySpan<byte> Next(int n, string what)
        {
            if (n < 0 || n > _data.Length - _pos) throw Damaged($"{what} of {n} bytes runs past the end of its block ({_data.Length - _pos} left)");
            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        internal ReadOnlySpan<byte> Take(int n, string what) => Next(n, what);
        internal void Skip(int n) => Next(n, "a header field");
        internal byte Byte() => Next(1, "a header field")[0];
        internal short Int16() => BinaryPrimitives.ReadInt16LittleEndian(Next(2, "a header field"));
        internal int Int32() => BinaryPrimitives.ReadInt32LittleEndian(Next(4, "a header field"));
        internal long Int64() => BinaryPrimitives.ReadInt64LittleEndian(Next(8, "a header field"));
        internal void AlignTo4() => _pos = Math.Min(_data.Length, (_pos + 3) & ~3);

        internal ulong VarUInt()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                byte b = Next(1, "a variable-length integer")[0];
                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return value;
            }
            throw Damaged("a variable-length integer is longer than 10 bytes");
        }

        internal int VarInt32(string what)
        {
            long at = Offset;
            ulong v = VarUInt();
            if (v > int.MaxValue) throw new DamagedNettraceException($"{what} {v} does not fit 31 bits", at);
            return (int)v;
        }

        internal string Utf16z(int maxChars, string what)
        {
            int start = _pos, end = start;
            while (true)
            {
                if (end + 1 >= _data.Length) throw Damaged($"{what} has no terminating NUL");
                if ((_data[end] | _data[end + 1]) == 0) break;
                end += 2;
                if ((end - start) / 2 > maxChars) throw Damaged($"{what} is longer than {maxChars} characters");
            }
            _pos = end + 2;
            return Encoding.Unicode.GetString(_data[start..end]);
        }
    }
}
