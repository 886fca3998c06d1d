// Greets, then copies stdin to stdout line by line.
#include <iostream>
#include <string>

int main() {
    std::cout << "hello from cpp" << '\n';
    std::string line;
    while (std::getline(std::cin, line)) {
        std::cout << line << '\n';
    }
    return 0;
}
