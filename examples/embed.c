/* The embedding example from README.md, built by CI against the installed
 * library (pkg-config and CMake package). x86_64 code: returns 42. */
#include <stdio.h>
#include <string.h>
#include <wxjit.h>

int main(void)
{
    static const unsigned char code[] = {0xb8, 42, 0, 0, 0, 0xc3}; /* mov eax,42; ret */
    wxjit_heap *heap;
    wxjit_reservation r;
    int err;

    if ((err = wxjit_fault_handler_install()) || /* once per process */
        (err = wxjit_heap_create(NULL, &heap)) ||
        (err = wxjit_reserve(heap, sizeof(code), 0, 0, &r))) {
        fprintf(stderr, "wxjit: %s\n", strerror(err));
        return 1;
    }
    void *exec = r.exec;                 /* emit code for this address... */
    memcpy(r.write, code, sizeof(code)); /* ...into the write view */
    if ((err = wxjit_commit(heap, &r, sizeof(code)))) /* now executable */
        return 1;

    int (*fn)(void);
    memcpy(&fn, &exec, sizeof(fn));
    printf("JIT code returned %d\n", fn()); /* callable from any thread */
    wxjit_free(heap, exec);
    wxjit_heap_destroy(heap);
    return fn == NULL;
}
