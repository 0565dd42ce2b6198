namespace PagePool.Cli;

/// <summary>
/// Something the command line named is not usable, found only when the command runs (a process that does not
/// answer, a file that vanished): reported like a parse error, one line, exit code 2.
/// </summary>
internal sealed class UsageException(string message) : Exception(message);
