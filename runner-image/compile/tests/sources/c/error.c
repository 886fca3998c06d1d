#include <stdio.h>

int main(void) {
    int count = 1
    return count;
}
