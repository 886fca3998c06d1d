/* The probe contract (see ../README.md) in C. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *greeting = getenv("GREETING");
    printf("hello from c\nargs:");
    for (int i = 1; i < argc; i++) printf("%s%s", i == 1 ? " " : " ", argv[i]);
    printf("\nenv: %s\nstdin: ", greeting ? greeting : "");
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, stdin)) > 0) fwrite(buffer, 1, n, stdout);
    fflush(stdout);
    fprintf(stderr, "probe done\n");
    const char *code = getenv("EXIT_CODE");
    return code ? atoi(code) : 0;
}
