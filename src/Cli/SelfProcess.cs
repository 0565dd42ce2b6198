using System.Diagnostics;

namespace PagePool.Cli;

/// <summary>Start this same pagepool again with other arguments: the AOT binary itself, or 'dotnet pagepool.dll' under the JIT.</summary>
internal static class SelfProcess
{
    internal static ProcessStartInfo StartInfo(IEnumerable<string> arguments)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pagepool.dll"));
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        return psi;
    }
}
