def main():
    print("tracehouse")
