/*
 * Smoke test for the Wine setup in .ci/windows: loads bcryptprimitives.dll
 * the way Rust's std does (by name, so Wine's DLL search and
 * WINEDLLOVERRIDES apply), calls ProcessPrng and checks that the bytes look
 * random.  Prints "smoke ok" and exits 0 on success.
 *
 *   x86_64-w64-mingw32-gcc -O2 -s -o smoke.exe smoke.c
 */
#include <windows.h>
#include <stdio.h>

typedef BOOL (WINAPI *process_prng_fn)(PBYTE, SIZE_T);

int main(void)
{
    HMODULE mod = LoadLibraryA("bcryptprimitives.dll");
    if (!mod) {
        printf("smoke: LoadLibrary(bcryptprimitives.dll) failed: %lu\n", GetLastError());
        return 2;
    }
    process_prng_fn prng = (process_prng_fn)(void *)GetProcAddress(mod, "ProcessPrng");
    if (!prng) {
        printf("smoke: bcryptprimitives.dll has no ProcessPrng\n");
        return 3;
    }
    BYTE a[64] = {0}, b[64] = {0};
    if (!prng(a, sizeof a) || !prng(b, sizeof b)) {
        printf("smoke: ProcessPrng returned FALSE\n");
        return 4;
    }
    int nonzero = 0, same = 1;
    for (size_t i = 0; i < sizeof a; i++) {
        nonzero |= a[i];
        same &= a[i] == b[i];
    }
    if (!nonzero || same) {
        printf("smoke: ProcessPrng output does not look random\n");
        return 5;
    }
    printf("smoke ok\n");
    return 0;
}
