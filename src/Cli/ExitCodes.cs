namespace PagePool.Cli;

/// <summary>The process exit codes of pagepool.</summary>
internal static class ExitCodes
{
    internal const int Ok = 0;
    /// <summary>A run failed: verification, a broken invariant, or an error from the library.</summary>
    internal const int Failed = 1;
    /// <summary>The arguments were wrong; nothing ran.</summary>
    internal const int BadArguments = 2;
}

/// <summary>An argument combination the parser cannot see is wrong; reported as one line, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
