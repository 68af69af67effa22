/*
 * Stand-in bcryptprimitives.dll for running x86_64-pc-windows-gnu test
 * binaries under Wine 8 (Debian 12's wine64).
 *
 * Rust's standard library (1.78 and later) gets its randomness (HashMap
 * seeds, std's internal RNG uses) from ProcessPrng() in bcryptprimitives.dll,
 * imported with raw-dylib.  Wine 8.0 ships no bcryptprimitives.dll at all, so
 * every Rust .exe fails to start with c0000135 (STATUS_DLL_NOT_FOUND).
 *
 * This DLL exports just ProcessPrng and implements it with RtlGenRandom
 * (advapi32!SystemFunction036), which Wine does have.  It is only ever used
 * in CI under Wine; nothing in the product links or ships it.
 *
 * Build (see .ci/windows):
 *   x86_64-w64-mingw32-gcc -O2 -shared -s -o bcryptprimitives.dll \
 *       bcryptprimitives.c bcryptprimitives.def -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom: exported from advapi32 under the name SystemFunction036. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG (32-bit) length; SIZE_T is 64-bit. */
    while (len > 0) {
        ULONG chunk = len > 0x40000000u ? 0x40000000u : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    /* The real ProcessPrng is documented to always return TRUE. */
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    (void)inst; (void)reason; (void)reserved;
    return TRUE;
}
